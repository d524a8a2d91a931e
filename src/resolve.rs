//! Endpoints by name: a thread of the control side (`ringway-dns`) resolves every cluster
//! endpoint written as a name through the system resolver every `dns_refresh`, off the
//! workers. A changed answer goes to every worker (`Command::Endpoints`): endpoints that
//! stayed keep their connections; connections to removed ones finish what they carry. A
//! failed lookup keeps the last good answer and is logged. The same thread tells the health
//! owner which endpoints to check (a name's addresses change with its answers).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::config::{resolve_endpoint, Address, Config};
use crate::health::{self, Target};
use crate::worker::{Command, Mailbox};

/// Longest sleep between looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);

pub struct Resolver {
    configs: Sender<Arc<Config>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Resolver {
    /// Starts the thread for `config`; health targets go to `targets`.
    pub fn start(config: Arc<Config>, mailboxes: Vec<Mailbox>, targets: Sender<Vec<Target>>) -> io::Result<Resolver> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringway-dns".into())
            .spawn(move || run(config, rx, s, mailboxes, targets))?;
        Ok(Resolver { configs: tx, stop, thread: Some(thread) })
    }

    /// The config changed (a reload): its clusters and its fresh answers from now on.
    pub fn set_config(&self, config: Arc<Config>) {
        let _ = self.configs.send(config);
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One cluster's names and their last good answer.
struct Named {
    names: Vec<String>,
    refresh: Duration,
    current: Vec<Address>,
    due: Instant,
    /// The last lookup failed (logged once, until one succeeds again).
    failing: bool,
}

fn run(
    mut config: Arc<Config>,
    rx: Receiver<Arc<Config>>,
    stop: Arc<AtomicBool>,
    mailboxes: Vec<Mailbox>,
    targets: Sender<Vec<Target>>,
) {
    let mut named = clusters(&config);
    publish(&config, &named, &targets);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut changed = false;
        for (cluster, n) in named.iter_mut() {
            if now < n.due {
                continue;
            }
            n.due = now + n.refresh;
            let answer = resolve_all(&n.names);
            if answer.is_ok() && std::mem::take(&mut n.failing) {
                log::info!("cluster {cluster}: {} resolve again", n.names.join(", "));
            }
            match answer {
                Ok(list) if list != n.current => {
                    log::info!(
                        "cluster {cluster}: {} now resolve to {} (were {}); updating every worker",
                        n.names.join(", "),
                        show(&list),
                        show(&n.current)
                    );
                    n.current = list.clone();
                    changed = true;
                    let (cluster, endpoints): (Arc<str>, _) = (cluster.as_str().into(), Arc::new(list));
                    let names = Arc::new(n.names.clone());
                    for m in &mailboxes {
                        let (cluster, names, endpoints) = (cluster.clone(), names.clone(), endpoints.clone());
                        m.send(Command::Endpoints { cluster, names, endpoints });
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if !std::mem::replace(&mut n.failing, true) {
                        log::warn!(
                            "cluster {cluster}: {e}; keeping the last good answer ({}) and trying again every {:?}",
                            show(&n.current),
                            n.refresh
                        );
                    }
                }
            }
        }
        if changed {
            publish(&config, &named, &targets);
        }
        let next = named.values().map(|n| n.due).min().map_or(TICK, |d| d.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(next.min(TICK)) {
            Ok(c) => {
                config = c;
                named = clusters(&config);
                publish(&config, &named, &targets);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The clusters of `config` with an endpoint written as a name, first refreshed one
/// `dns_refresh` after the config's own lookup.
fn clusters(config: &Config) -> HashMap<String, Named> {
    let now = Instant::now();
    config
        .clusters
        .iter()
        .filter(|c| !c.endpoint_names.is_empty())
        .map(|c| {
            let n = Named {
                names: c.endpoint_names.clone(),
                refresh: c.dns_refresh,
                current: c.endpoints.clone(),
                due: now + c.dns_refresh,
                failing: false,
            };
            (c.name.clone(), n)
        })
        .collect()
}

/// Every address the written endpoints stand for, or the first failure.
fn resolve_all(names: &[String]) -> Result<Vec<Address>, String> {
    let mut out = Vec::new();
    for n in names {
        for a in resolve_endpoint(n)? {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

fn show(list: &[Address]) -> String {
    list.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ")
}

fn publish(config: &Config, named: &HashMap<String, Named>, targets: &Sender<Vec<Target>>) {
    let _ = targets.send(health::targets(config, &|c| named.get(c).map(|n| n.current.clone())));
}
