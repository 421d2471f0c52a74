//! The bench's client side (`examples/bench` runs it; see README "Benchmarks"): load, and the
//! registry protocol the bench needs, one subcommand each. Every subcommand prints one line of
//! `key=value` pairs on stdout (times in seconds unless the key says otherwise) and exits 1 when
//! anything failed.
//!
//! ```text
//! loadgen load [OPTIONS] URL                    requests back to back; see load.rs
//! loadgen idle -c N URL                         holds N idle keep-alive connections; idle.rs
//! loadgen make-image DIR SIZE...                random layers, a config and a manifest in DIR
//! loadgen push-image BASE REPO TAG DIR          push DIR's blobs, then its manifest
//! loadgen probe BASE                            does POST ?digest= with a body store it?
//! loadgen push-blob [--mode M] [--chunk N] [--salt S] BASE REPO FILE   one timed blob push
//! loadgen pull BASE REPO TAG                    manifest, then every blob at once (a pull)
//! ```
//!
//! `loadgen URL` and `loadgen -c ..` (no subcommand) mean `load`. Statistics over repetitions
//! (medians, ratios) are in `stats.rs`, shared with the runner; the percentiles of one run come
//! from `load`'s HDR histogram.

mod idle;
mod load;
mod registry;
#[allow(dead_code)] // the runner uses the rest
mod stats;
mod tls;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.first() {
        Some(a) if !a.starts_with('-') && !a.contains("://") => args.remove(0),
        _ => "load".to_owned(),
    };
    let result = match command.as_str() {
        "load" => return load::main(args),
        "idle" => return idle::main(args),
        "make-image" => registry::make_image(&args),
        "push-image" => registry::push_image(&args),
        "probe" => registry::probe(&args),
        "push-blob" => registry::push_blob(args),
        "pull" => registry::pull(&args),
        c => Err(format!(
            "unknown subcommand {c:?}: load, idle, make-image, push-image, probe, push-blob, pull"
        )),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen {command}: {e}");
            ExitCode::FAILURE
        }
    }
}
