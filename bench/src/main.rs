//! `ringway-bench`: the demo, the load generator and echo backends used by perf/.
//! It is the workspace's default `cargo run` binary, so `cargo run --release -- demo` from the
//! repository root runs the demo; the proxy itself is `cargo run --release --bin ringway`.
//!
//!   ringway-bench demo
//!   ringway-bench echo thrift --listen 127.0.0.1:9100 --threads 2
//!   ringway-bench load --target 127.0.0.1:7000 --protocol framed-binary -c 32 -m 10 -d 10s
//!   ringway-bench load --target 127.0.0.1:7000 -c 32 -m 10 --hgrm /tmp/ringway.hgrm   # then perf/plot.py

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringway::config::parse_duration;
use ringway_bench::{report, run_load, BenchProtocol, LoadSpec};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ringway-bench", version, about = "Load generator and echo backends for ringway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start an echo backend and ringway on loopback, drive a short load through both, print the table.
    Demo {
        /// Length of each measured run
        #[arg(long, default_value = "2s")]
        duration: String,
    },
    /// Drive load at a target and print latency percentiles (--hgrm FILE also writes the
    /// distribution for perf/plot.py).
    Load(LoadArgs),
    /// Run an echo backend until killed.
    Echo {
        /// thrift | grpc | ttstream
        kind: String,
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Added delay before each batch of replies, e.g. 1ms
        #[arg(long, default_value = "0ms")]
        delay: String,
    },
    /// The proxy's own commands belong to the `ringway` binary: say so instead of "unknown".
    #[command(hide = true)]
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    #[command(hide = true)]
    Check {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args)]
struct LoadArgs {
    #[arg(long)]
    target: SocketAddr,
    /// framed-binary | framed-compact | ttheader | theader | grpc-unary | grpc-server-stream | grpc-bidi |
    /// ttstream-bidi | ttstream-server
    #[arg(long, default_value = "framed-binary")]
    protocol: String,
    /// Connections
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: usize,
    /// Requests in flight per connection (closed loop)
    #[arg(short = 'm', long, default_value_t = 1)]
    inflight: usize,
    /// Open loop: total requests per second, latency measured from each intended send time
    #[arg(long)]
    rate: Option<f64>,
    #[arg(short = 'd', long, default_value = "10s")]
    duration: String,
    #[arg(long, default_value = "2s")]
    warmup: String,
    /// Payload bytes per request
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Load-generator threads
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
    /// Name for this run in the output
    #[arg(long, default_value = "load")]
    name: String,
    /// Also write the measured latency distribution (warm-up excluded, all threads merged) to FILE
    /// in HdrHistogram's percentile-distribution text format (.hgrm, milliseconds), which
    /// perf/plot.py draws
    #[arg(long, value_name = "FILE")]
    hgrm: Option<PathBuf>,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo { duration } => {
            ringway::logging::init();
            let d = match parse_duration(&duration) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("ringway-bench demo: --duration: {e}");
                    return ExitCode::from(2);
                }
            };
            match ringway_bench::demo::run(d) {
                Ok(table) => {
                    print!("{table}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ringway-bench demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { .. } | Command::Check { .. } => {
            eprintln!(
                "ringway-bench: `run` and `check` are commands of the proxy binary, `ringway`: \
                 cargo run --release --bin ringway -- run --config conf/ringway.toml"
            );
            ExitCode::from(2)
        }
        Command::Load(a) => {
            let protocol = match BenchProtocol::parse(&a.protocol) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("ringway-bench: {e}");
                    return ExitCode::from(2);
                }
            };
            if protocol == BenchProtocol::GrpcBidi && a.rate.is_some() {
                eprintln!("ringway-bench: --rate (open loop) is for grpc-unary and grpc-server-stream; grpc-bidi is closed loop (-c, -m)");
                return ExitCode::from(2);
            }
            let (duration, warmup) = match (parse_duration(&a.duration), parse_duration(&a.warmup)) {
                (Ok(d), Ok(w)) => (d, w),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("ringway-bench: {e}");
                    return ExitCode::from(2);
                }
            };
            // Created before the run, so a path that cannot be written fails before the load, not after.
            let mut hgrm = match &a.hgrm {
                None => None,
                Some(path) => match File::create(path) {
                    Ok(f) => Some((path, f)),
                    Err(e) => {
                        eprintln!("ringway-bench: --hgrm {}: {e}", path.display());
                        return ExitCode::from(2);
                    }
                },
            };
            let spec = LoadSpec {
                target: a.target,
                protocol,
                connections: a.connections.max(1),
                inflight: a.inflight.max(1),
                rate: a.rate,
                warmup,
                duration,
                payload: a.payload,
                threads: a.threads.max(1),
                progress: !a.json && duration.as_secs() >= 5,
            };
            let r = run_load(&spec);
            if a.json {
                println!("{}", report::json(&a.name, &r));
            } else {
                print!("{}", report::table(&[(format!("{} {}", a.name, r.spec_label), r.clone())], false));
                for (k, v) in &r.errors {
                    println!("  error {k}: {v}");
                }
            }
            if let Some((path, f)) = &mut hgrm {
                if let Err(e) = f.write_all(report::hgrm(&r.hist).as_bytes()) {
                    eprintln!("ringway-bench: --hgrm {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            if r.requests == 0 {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Command::Echo { kind, listen, threads, delay } => {
            if kind == "grpc" {
                // tonic/hyper on its own tokio runtime; `x-delay-ms` request metadata adds delay.
                return match ringway_bench::grpc_echo::EchoServer::start(&listen.to_string(), threads) {
                    Ok(s) => {
                        println!("echo grpc listening on {}", s.addr);
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => {
                        eprintln!("ringway-bench: echo grpc on {listen}: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            if kind == "ttstream" {
                return match ringway_bench::echo::EchoServer::start_ttstream(listen, threads) {
                    Ok(s) => {
                        println!("echo ttstream listening on {}", s.addr);
                        s.wait();
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("ringway-bench: echo ttstream on {listen}: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            if kind != "thrift" {
                eprintln!("ringway-bench: echo {kind}: unknown kind (thrift | grpc | ttstream)");
                return ExitCode::from(2);
            }
            let delay = match parse_duration(&delay) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("ringway-bench: --delay: {e}");
                    return ExitCode::from(2);
                }
            };
            match ringway_bench::echo::EchoServer::start(listen, threads, delay) {
                Ok(s) => {
                    println!("echo thrift listening on {}", s.addr);
                    s.wait();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ringway-bench: echo on {listen}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
