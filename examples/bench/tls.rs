//! Section 7 (issue 13): HTTPS. A self-signed certificate for 127.0.0.1 is made for the run
//! (rcgen); stevedore and the reference are restarted on the stores of the plain section with
//! `http.tls` set, and `loadgen load` (rustls, trusting that certificate) measures the warm blob
//! GET (1 connection × 4 GETs) and the manifest GET by tag (64 connections), each over HTTP/1.1
//! and over h2 (ALPN), repetitions interleaved.

use crate::procs::{self, Kind, Setup};
use crate::stats::{median, number};
use crate::{ACCEPT, Bench, MIB, Results, log};
use std::collections::HashMap;
use std::time::Instant;

/// The protocols measured over TLS: (key, loadgen flags).
pub const TLS_PROTOCOLS: [(&str, &[&str]); 2] = [("h1", &[]), ("h2", &["--h2"])];

impl Bench<'_> {
    pub fn tls(&self, blob_digest: &str, r: &mut Results) -> Result<(), String> {
        let dir = self.work.join("tls");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .map_err(|e| format!("certificate: {e}"))?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).map_err(|e| e.to_string())?;
        std::fs::write(&key, ck.signing_key.serialize_pem()).map_err(|e| e.to_string())?;
        let setup = Setup {
            http: format!(
                "tls: {{certificate: {}, key: {}}}",
                cert.display(),
                key.display()
            ),
            https: true,
            keep: true,
            ..Setup::default()
        };
        let servers = [
            (
                "st",
                procs::registry_with(
                    Kind::Stevedore,
                    &self.bins.stevedore,
                    &self.work.join("st"),
                    &setup,
                )?,
            ),
            (
                "ref",
                procs::registry_with(
                    Kind::Reference,
                    &self.bins.stevedore,
                    &self.work.join("ref"),
                    &setup,
                )?,
            ),
        ];
        let cacert = cert.display().to_string();
        let big = self.o.big.to_string();
        let secs = self.o.secs.to_string();
        log(&format!(
            "7. HTTPS (rustls client): warm blob GET {} MiB, 1 connection × 4 GETs, and manifest GET by tag, 64 connections; HTTP/1.1 and h2; {}× each, interleaved",
            self.o.big / MIB,
            self.o.reps
        ));
        let blob = |p: &procs::Proc, flags: &[&str], warm: bool| -> Result<f64, String> {
            let url = format!("{}/v2/bench/big/blobs/{blob_digest}", p.url);
            let n = if warm { "1" } else { "4" };
            let mut args = vec!["load", "--cacert", &cacert, "-c", "1", "-n", n];
            args.extend_from_slice(flags);
            args.extend_from_slice(&["--expect-bytes", &big, &url]);
            let t0 = Instant::now();
            let line = self.bins.loadgen(&args)?;
            Ok(number(&line, "bytes")? / 1e9 / t0.elapsed().as_secs_f64())
        };
        let manifest = |p: &procs::Proc, flags: &[&str], d: &str| -> Result<f64, String> {
            let url = format!("{}/v2/bench/big/manifests/v1", p.url);
            let mut args = vec!["load", "--cacert", &cacert, "-c", "64", "-d", d];
            args.extend_from_slice(flags);
            args.extend_from_slice(&["-m", "GET", "-H", ACCEPT, &url]);
            number(&self.bins.loadgen(&args)?, "rps")
        };
        for (_, p) in &servers {
            for (_, flags) in TLS_PROTOCOLS {
                blob(p, flags, true)?;
                manifest(p, flags, "1")?;
            }
        }
        let mut runs: HashMap<String, Vec<f64>> = HashMap::new();
        for _ in 0..self.o.reps {
            for (s, p) in &servers {
                for (proto, flags) in TLS_PROTOCOLS {
                    runs.entry(format!("tlsblob.{proto}.{s}"))
                        .or_default()
                        .push(blob(p, flags, false)?);
                    runs.entry(format!("tlsmanifest.{proto}.{s}"))
                        .or_default()
                        .push(manifest(p, flags, &secs)?);
                }
            }
        }
        for (s, _) in &servers {
            for (proto, _) in TLS_PROTOCOLS {
                let b = &runs[&format!("tlsblob.{proto}.{s}")];
                let m = &runs[&format!("tlsmanifest.{proto}.{s}")];
                log(&format!(
                    "   {s} {proto}: blob {b:.2?} GB/s; manifest {m:.0?} req/s"
                ));
            }
        }
        for (k, v) in &runs {
            r.set(k.clone(), median(v));
        }
        Ok(())
    }
}
