//! A blob reader that reads like Go's `net/http` client under `io.Copy` (how dockerd,
//! containerd and skopeo read a layer): plain HTTP/1.1 GETs on keep-alive connections, the
//! response head through a 4 KiB buffer (Go's `bufio.Reader` default), then the body
//! (`Content-Length`) in reads of at most 32 KiB (`io.Copy`'s buffer) straight from the socket,
//! capped at what is left, as `io.LimitReader` does. Blocking std sockets, one thread per
//! connection: no async runtime between the socket and the reads.
//!
//! Usage: `read32k [-c CONNECTIONS] [-n GETS] [--read-size BYTES] [--expect-bytes N] URL`
//!
//! `-n` GETs in all (default: one per connection) are spread over `-c` connections (default 1)
//! opened at once. Prints one line of `key=value` pairs and exits non-zero if any GET failed,
//! was not a 2xx or (with `--expect-bytes`) had a body of another length:
//!
//! ```text
//! requests=.. errors=.. seconds=.. bytes=.. gbps=..
//! ```

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Instant;

struct Options {
    connections: u64,
    gets: Option<u64>,
    read_size: usize,
    expect_bytes: Option<u64>,
    authority: String,
    path: String,
}

fn usage(msg: &str) -> String {
    format!(
        "{msg}\nusage: read32k [-c CONNECTIONS] [-n GETS] [--read-size BYTES] \
         [--expect-bytes N] http://HOST:PORT/PATH"
    )
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        connections: 1,
        gets: None,
        read_size: 32 * 1024,
        expect_bytes: None,
        authority: String::new(),
        path: String::new(),
    };
    let mut url = None;
    while let Some(a) = args.next() {
        let mut number = || -> Result<u64, String> {
            let v = args
                .next()
                .ok_or_else(|| usage(&format!("{a} needs a value")))?;
            v.parse().map_err(|e| usage(&format!("{a} {v}: {e}")))
        };
        match a.as_str() {
            "-c" => o.connections = number()?,
            "-n" => o.gets = Some(number()?),
            "--read-size" => o.read_size = number()? as usize,
            "--expect-bytes" => o.expect_bytes = Some(number()?),
            "-h" | "--help" => return Err(usage("")),
            _ if url.is_none() && !a.starts_with('-') => url = Some(a),
            _ => return Err(usage(&format!("unexpected argument {a:?}"))),
        }
    }
    let url = url.ok_or_else(|| usage("no URL"))?;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| usage("only http:// URLs"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    o.authority = authority.to_owned();
    o.path = if path.is_empty() { "/" } else { path }.to_owned();
    if o.connections == 0 || o.read_size == 0 {
        return Err(usage("-c and --read-size must be at least 1"));
    }
    Ok(o)
}

/// One GET on `s`: returns the body bytes read, or why the GET failed.
fn get(o: &Options, s: &mut TcpStream, buf: &mut [u8]) -> io::Result<u64> {
    use io::{Error, ErrorKind};
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: read32k\r\nAccept-Encoding: identity\r\n\r\n",
        o.path, o.authority
    );
    s.write_all(req.as_bytes())?;
    // The head, through a 4 KiB buffer; what follows it is the body's start.
    let mut head = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 64 * 1024 {
            return Err(Error::new(ErrorKind::InvalidData, "response head too long"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let text = std::str::from_utf8(&head[..end])
        .map_err(|_| Error::new(ErrorKind::InvalidData, "response head is not UTF-8"))?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, "no status code"))?;
    if !(200..300).contains(&status) {
        return Err(Error::other(format!("status {status}")));
    }
    let length = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, "no Content-Length"))?;
    let mut got = (head.len() - end) as u64;
    while got < length {
        let want = (length - got).min(buf.len() as u64) as usize;
        let n = s.read(&mut buf[..want])?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        got += n as u64;
    }
    Ok(got)
}

/// One connection's GETs: (requests, errors, bytes).
fn connection(o: &Options, gets: u64) -> (u64, u64, u64) {
    let mut buf = vec![0u8; o.read_size];
    let (mut requests, mut errors, mut bytes) = (0, 0, 0);
    let mut stream: Option<TcpStream> = None;
    for _ in 0..gets {
        requests += 1;
        if stream.is_none() {
            match TcpStream::connect(&o.authority) {
                Ok(s) => {
                    let _ = s.set_nodelay(true); // as Go's net.Dial does
                    stream = Some(s);
                }
                Err(e) => {
                    eprintln!("read32k: connect {}: {e}", o.authority);
                    errors += 1;
                    continue;
                }
            }
        }
        let s = stream.as_mut().expect("connected above");
        match get(o, s, &mut buf) {
            Ok(n) => {
                bytes += n;
                if o.expect_bytes.is_some_and(|e| e != n) {
                    eprintln!("read32k: got {n} bytes");
                    errors += 1;
                }
            }
            Err(e) => {
                eprintln!("read32k: GET {}{}: {e}", o.authority, o.path);
                errors += 1;
                stream = None;
            }
        }
    }
    (requests, errors, bytes)
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let gets = o.gets.unwrap_or(o.connections);
    let started = Instant::now();
    let (requests, errors, bytes) = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..o.connections)
            .map(|i| {
                // Spread the GETs evenly; the first ones take the remainder.
                let mine = gets / o.connections + u64::from(i < gets % o.connections);
                let o = &o;
                scope.spawn(move || connection(o, mine))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("connection thread"))
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    });
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "requests={requests} errors={errors} seconds={seconds:.3} bytes={bytes} gbps={:.3}",
        bytes as f64 / 1e9 / seconds
    );
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
