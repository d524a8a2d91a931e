//! Runs a load: one monoio thread per `threads`, connections spread over them, each driven by
//! its protocol's loop; the threads' accumulators are merged into one result.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::load::{new_hist, Acc, LoadResult, LoadSpec, Window};
use crate::{grpc_load, thrift_load, ttstream_load};

/// Runs the load and returns merged results.
pub fn run_load(spec: &LoadSpec) -> LoadResult {
    let start = Instant::now() + Duration::from_millis(20);
    let window = Window { start, measure_from: start + spec.warmup, end: start + spec.warmup + spec.duration };
    let progress = Arc::new(AtomicU64::new(0));
    let threads = spec.threads.clamp(1, spec.connections.max(1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let spec = spec.clone();
            let progress = progress.clone();
            std::thread::spawn(move || run_thread(t, threads, spec, window, progress))
        })
        .collect();
    if spec.progress {
        let p = progress.clone();
        let end = window.end;
        std::thread::spawn(move || {
            let mut last = 0;
            while Instant::now() + Duration::from_secs(1) < end {
                std::thread::sleep(Duration::from_secs(1));
                let now = p.load(Ordering::Relaxed);
                let left = end.saturating_duration_since(Instant::now()).as_secs();
                eprintln!("progress: {now} replies, {}/s, {left}s left", now - last);
                last = now;
            }
        });
    }
    let mut hist = new_hist();
    let mut requests = 0;
    let mut errors = BTreeMap::new();
    for h in handles {
        let acc = h.join().expect("load thread");
        hist.add(&acc.hist).expect("same histogram bounds");
        requests += acc.requests;
        for (k, v) in acc.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let mode = match spec.rate {
        Some(r) => format!("open {r:.0}/s"),
        None => format!("{}x{}", spec.connections, spec.inflight),
    };
    LoadResult {
        spec_label: format!("{} {mode} {}B", spec.protocol.name(), spec.payload),
        requests,
        seconds: spec.duration.as_secs_f64(),
        hist,
        errors,
    }
}

fn run_thread(t: usize, threads: usize, spec: LoadSpec, window: Window, progress: Arc<AtomicU64>) -> Acc {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().expect("load runtime");
    rt.block_on(async move {
        let acc = Rc::new(RefCell::new(Acc { hist: new_hist(), requests: 0, errors: BTreeMap::new() }));
        let spec = Rc::new(spec);
        let mine: Vec<u32> = (0..spec.connections as u32).filter(|c| *c as usize % threads == t).collect();
        let per_conn_rate = spec.rate.map(|r| r / spec.connections as f64);
        let tasks: Vec<_> = mine
            .into_iter()
            .map(|id| {
                let (spec, acc, progress) = (spec.clone(), acc.clone(), progress.clone());
                monoio::spawn(async move {
                    let Ok(stream) = TcpStream::connect_addr(spec.target).await else {
                        acc.borrow_mut().error("connect");
                        return;
                    };
                    let _ = stream.set_nodelay(true);
                    if spec.protocol.is_grpc() {
                        return match per_conn_rate {
                            None => grpc_load::closed_loop(id, stream, &spec, window, &acc, &progress).await,
                            Some(r) => grpc_load::open_loop(id, stream, &spec, window, r, &acc, &progress).await,
                        };
                    }
                    if spec.protocol.is_ttstream() {
                        if per_conn_rate.is_some() {
                            acc.borrow_mut().error("open_loop_not_supported_for_ttstream");
                            return;
                        }
                        return ttstream_load::closed_loop(id, stream, &spec, window, &acc, &progress).await;
                    }
                    match per_conn_rate {
                        None => thrift_load::closed_loop(id, stream, &spec, window, &acc, &progress).await,
                        Some(r) => thrift_load::open_loop(id, stream, &spec, window, r, &acc, &progress).await,
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        Rc::try_unwrap(acc).ok().expect("tasks done").into_inner()
    })
}
