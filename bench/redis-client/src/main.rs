//! One flow step of the Redis store as the addon would run it: EVALSHA of a small script that
//! reads a session (≈ 300 bytes) and writes it back with a PX expiry, one round trip. Run through
//! each candidate client for `--seconds`, with `--inflight` requests outstanding, on a tokio
//! runtime of `--threads` workers (the addon's). Prints one JSON line per run: operations per
//! second, latency p50/p99 (µs), this process's CPU µs per operation and Redis's.
//!
//!   otpkit-bench-redis-client --url redis://127.0.0.1:6379 --client redis-rs|fred \
//!     --inflight 16 --seconds 5 --threads 2
//!
//! With `--cluster host:port,host:port,…` instead of `--url`, the same through each client's
//! Redis Cluster mode (every key is its own slot owner's; Redis CPU is summed over the nodes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEP: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return v
";
const KEYS: usize = 10_000;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == &format!("--{name}"))?;
    args.get(i + 1).cloned()
}

/// This process's CPU time (user + system), from /proc/self/stat, in µs.
fn cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 (1-based) of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) * 1_000_000 / 100
}

/// Redis's own CPU (used_cpu_user + used_cpu_sys of INFO cpu), in µs.
fn redis_cpu_us(info: &str) -> u64 {
    let get = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    ((get("used_cpu_user") + get("used_cpu_sys")) * 1e6) as u64
}

fn value(i: usize) -> String {
    format!(
        r#"{{"v":2,"id":"{i:08}-5c1d-4e6f-9a0b-1c2d3e4f5a6b","workspaceId":"ws_0123456789abcdef01234567","dest":"+233201234567","purpose":"LOGIN","channel":"sms","codeHash":"{}","attemptsUsed":0,"maxAttempts":5,"createdAt":1795348800000,"expiresAt":1795349100000}}"#,
        "ab".repeat(32)
    )
}

#[derive(Clone)]
enum Conn {
    RedisRs(redis::aio::MultiplexedConnection, redis::Script),
    RedisRsCluster(redis::cluster_async::ClusterConnection, redis::Script),
    Fred(fred::clients::Client, String),
}

impl Conn {
    async fn step(&self, key: &str, val: &str) -> Result<(), String> {
        match self {
            Conn::RedisRs(c, script) => {
                let mut c = c.clone();
                let _: Option<String> = script
                    .key(key)
                    .arg(val)
                    .arg(300_000)
                    .invoke_async(&mut c)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
            Conn::RedisRsCluster(c, script) => {
                let mut c = c.clone();
                let _: Option<String> = script
                    .key(key)
                    .arg(val)
                    .arg(300_000)
                    .invoke_async(&mut c)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
            Conn::Fred(c, sha) => {
                use fred::interfaces::LuaInterface;
                let _: Option<String> = c
                    .evalsha(
                        sha.as_str(),
                        vec![key],
                        vec![val.to_string(), "300000".to_string()],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
        }
    }
}

/// The node URLs of `host:port,host:port,…`.
fn node_urls(cluster: &str) -> Vec<String> {
    cluster
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| format!("redis://{n}"))
        .collect()
}

async fn connect(kind: &str, url: &str, cluster: Option<&str>) -> Result<Conn, String> {
    match (kind, cluster) {
        ("redis-rs", Some(nodes)) => {
            let client =
                redis::cluster::ClusterClient::new(node_urls(nodes)).map_err(|e| e.to_string())?;
            let c = client
                .get_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Conn::RedisRsCluster(c, redis::Script::new(STEP)))
        }
        ("fred", Some(nodes)) => {
            let mut hosts = nodes.split(',').filter(|n| !n.is_empty());
            let first = hosts.next().ok_or("--cluster names no node")?;
            let rest: Vec<String> = hosts.map(|h| format!("node={h}")).collect();
            let url = format!("redis-cluster://{first}?{}", rest.join("&"));
            fred_client(&url).await
        }
        ("fred", None) => fred_client(url).await,
        ("redis-rs", None) => {
            let client = redis::Client::open(url).map_err(|e| e.to_string())?;
            let c = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Conn::RedisRs(c, redis::Script::new(STEP)))
        }
        (other, _) => Err(format!("unknown client {other} (redis-rs or fred)")),
    }
}

async fn fred_client(url: &str) -> Result<Conn, String> {
    use fred::interfaces::{ClientLike, LuaInterface};
    let config = fred::types::config::Config::from_url(url).map_err(|e| e.to_string())?;
    let c = fred::types::Builder::from_config(config)
        .build()
        .map_err(|e| e.to_string())?;
    c.init().await.map_err(|e| e.to_string())?;
    // SCRIPT LOAD reaches every primary in cluster mode.
    let sha: String = c
        .script_load_cluster(STEP)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Conn::Fred(c, sha))
}

fn main() {
    let url = arg("url").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let kind = arg("client").unwrap_or_else(|| "redis-rs".into());
    let inflight: usize = arg("inflight").and_then(|v| v.parse().ok()).unwrap_or(1);
    let seconds: u64 = arg("seconds").and_then(|v| v.parse().ok()).unwrap_or(5);
    let threads: usize = arg("threads").and_then(|v| v.parse().ok()).unwrap_or(2);
    let cluster = arg("cluster");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let out = rt.block_on(run(&url, cluster.as_deref(), &kind, inflight, seconds));
    match out {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("redis-client bench ({kind}): {e}");
            std::process::exit(1);
        }
    }
}

/// Redis's CPU so far, summed over every server (one, or each cluster node), in µs.
async fn servers_cpu_us(servers: &[redis::aio::MultiplexedConnection]) -> Result<u64, String> {
    let mut sum = 0;
    for s in servers {
        let mut s = s.clone();
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(&mut s)
            .await
            .map_err(|e| e.to_string())?;
        sum += redis_cpu_us(&info);
    }
    Ok(sum)
}

async fn run(
    url: &str,
    cluster: Option<&str>,
    kind: &str,
    inflight: usize,
    seconds: u64,
) -> Result<String, String> {
    // Seed the keys (through a cluster-aware connection in cluster mode) and keep one plain
    // connection per server to read its CPU (not measured).
    let urls = match cluster {
        Some(nodes) => node_urls(nodes),
        None => vec![url.to_string()],
    };
    let mut servers = Vec::new();
    for u in &urls {
        let c = redis::Client::open(u.as_str()).map_err(|e| e.to_string())?;
        servers.push(
            c.get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let seed = connect("redis-rs", url, cluster).await?;
    for i in 0..KEYS {
        let cmd = redis::cmd("SET")
            .arg(format!("bench:{i}"))
            .arg(value(i))
            .arg("PX")
            .arg(600_000)
            .clone();
        let done = match &seed {
            Conn::RedisRs(c, _) => cmd.exec_async(&mut c.clone()).await,
            Conn::RedisRsCluster(c, _) => cmd.exec_async(&mut c.clone()).await,
            Conn::Fred(..) => return Err("seeding needs redis-rs".into()),
        };
        done.map_err(|e| e.to_string())?;
    }
    let conn = connect(kind, url, cluster).await?;
    // Warm up (and load the script where the client loads it lazily).
    for i in 0..200 {
        conn.step(&format!("bench:{}", i % KEYS), &value(i)).await?;
    }
    let redis_before = servers_cpu_us(&servers).await?;
    let cpu_before = cpu_us();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(inflight);
    for t in 0..inflight {
        let conn = conn.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut i = t;
            let vals: Vec<String> = (0..16).map(value).collect();
            while !stop.load(Ordering::Relaxed) {
                let key = format!("bench:{}", i % KEYS);
                let t0 = Instant::now();
                conn.step(&key, &vals[i % vals.len()]).await?;
                lat.push(t0.elapsed().as_micros() as u32);
                i += inflight;
            }
            Ok::<Vec<u32>, String>(lat)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_us().saturating_sub(cpu_before);
    let redis_cpu = servers_cpu_us(&servers).await?.saturating_sub(redis_before);
    all.sort_unstable();
    let n = all.len().max(1);
    let pct = |p: f64| {
        all.get(((n as f64 * p) as usize).min(n - 1))
            .copied()
            .unwrap_or(0)
    };
    Ok(serde_json::json!({
        "client": kind,
        "cluster": cluster.is_some(),
        "inflight": inflight,
        "ops": all.len(),
        "opsPerSec": (all.len() as f64 / elapsed).round(),
        "p50us": pct(0.50),
        "p99us": pct(0.99),
        "cpuUsPerOp": (cpu as f64 / n as f64 * 100.0).round() / 100.0,
        "redisCpuUsPerOp": (redis_cpu as f64 / n as f64 * 100.0).round() / 100.0,
    })
    .to_string())
}
