//! What the binary's integration tests share: starting `gantry run` as a child process,
//! a broker and a ClickHouse of a test's own, and the fault tests' setup and waits.

// Each test binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gantry_gen::{Network, Traffic, TrafficConfig};
use gantry_tests::Env;

/// A `gantry run` child process, killed if the test ends (or fails) while it runs.
pub struct Running(pub Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn spawn_gantry(config: &Path, tariff_dir: &Path, log: &Path) -> Running {
    let log = std::fs::File::options().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["run", "--config"])
        .arg(config)
        .arg("--tariff")
        .arg(tariff_dir)
        // `GANTRY_TEST_LOG` overrides the filter (e.g. `info,librdkafka=debug` with
        // `GANTRY_RDKAFKA_DEBUG=fetch`) when a test's log is to be read closely.
        .env("RUST_LOG", std::env::var("GANTRY_TEST_LOG").unwrap_or_else(|_| "info".into()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Running)
        .expect("start gantry")
}

/// A Tansu broker of a test's own (`sqlite://` storage, so it keeps its data across a
/// restart), on its own port: the test can stop and start it without touching the shared
/// broker the other tests use. Stopped when dropped.
pub struct PrivateBroker {
    pub addr: String,
    storage: String,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl PrivateBroker {
    pub fn start(port: u16, dir: &Path) -> PrivateBroker {
        std::fs::create_dir_all(dir).unwrap();
        // Tansu reads the path after `sqlite://` relative to its working directory (`dir`).
        let storage = "sqlite://tansu.db".to_string();
        let mut b = PrivateBroker {
            addr: format!("127.0.0.1:{port}"),
            storage,
            dir: dir.into(),
            child: None,
        };
        b.resume();
        b
    }

    /// Starts the broker again on the same storage and waits for its port.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let url = format!("tcp://{}", self.addr);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let child = Command::new("tansu")
            .args(["broker", "--storage-engine", &self.storage, "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu (deploy/local/stack up installs it)");
        self.child = Some(child);
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(&self.addr).is_err() {
            assert!(started.elapsed().as_secs() < 60, "tansu did not listen on {}", self.addr);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Stops the broker (SIGKILL: an outage, not a shutdown it could prepare for).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A ClickHouse server of a test's own (Debian's `clickhouse-server`, the shared one's
/// config with its own data directory and ports), so the test can stop and start it without
/// touching the shared server the other tests use. Stopped when dropped.
pub struct PrivateClickHouse {
    pub url: String,
    http_port: u16,
    tcp_port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl PrivateClickHouse {
    /// On `http_port` (HTTP), `http_port + 1` (native) and `http_port + 2` (interserver).
    pub fn start(http_port: u16, dir: &Path) -> PrivateClickHouse {
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let mut c = PrivateClickHouse {
            url: format!("http://127.0.0.1:{http_port}"),
            http_port,
            tcp_port: http_port + 1,
            dir: dir.into(),
            child: None,
        };
        c.resume();
        c
    }

    /// Starts the server again on the same data and waits until it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "clickhouse already running");
        let d = self.dir.display();
        let child = Command::new("clickhouse-server")
            .arg("--config-file=/etc/clickhouse-server/config.xml")
            .arg("--")
            .arg(format!("--path={d}/"))
            .arg(format!("--tmp_path={d}/tmp/"))
            .arg(format!("--logger.log={d}/log"))
            .arg(format!("--logger.errorlog={d}/err"))
            .arg("--listen_host=127.0.0.1")
            .arg(format!("--http_port={}", self.http_port))
            .arg(format!("--tcp_port={}", self.tcp_port))
            .arg(format!("--interserver_http_port={}", self.http_port + 2))
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start clickhouse-server (deploy/local/stack up installs it)");
        self.child = Some(child);
        let started = std::time::Instant::now();
        let addr = format!("127.0.0.1:{}", self.http_port);
        loop {
            let answered = std::net::TcpStream::connect(&addr).is_ok_and(|mut s| {
                use std::io::{Read, Write};
                let _ = s.write_all(b"GET /ping HTTP/1.0\r\n\r\n");
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                reply.contains("Ok.")
            });
            if answered {
                return;
            }
            assert!(started.elapsed().as_secs() < 60, "clickhouse did not answer on {addr}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Stops the server (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lane records per test: the floor for a fault test's exactly-once check.
pub const RECORDS: u64 = 100_000;

/// How long a test waits for something Gantry should do within seconds before it calls it
/// stuck. A hang guard, not a speed check.
pub const STUCK_AFTER: Duration = Duration::from_secs(120);

/// A test's environment (`partitions` each topic), a generated network written as a tariff
/// directory, and its traffic (not sent yet).
pub fn setup(
    name: &str,
    partitions: i32,
    seed: u64,
) -> (Env, std::path::PathBuf, Network, Traffic) {
    setup_in(Env::new(name, partitions), seed)
}

/// [`setup`] in an environment made by the test (on a broker of its own).
pub fn setup_in(mut env: Env, seed: u64) -> (Env, std::path::PathBuf, Network, Traffic) {
    // The merge's real wait (2 s), not the 50 ms `Env` sets: on a loaded host the short wait
    // passes, a side is closed, and records are merged out of time order — allowed by the
    // merge rule, but a trade merged before its card's `open` is rejected `unknown_card`,
    // which the generator's tally does not expect.
    env.cfg.merge_idle_ms = gantry_pipeline::PipelineConfig::default().merge_idle_ms;
    let net = Network::new(seed, 300, 8);
    let tariff_dir = std::env::temp_dir().join(format!("gantry-tariff-{}", env.cfg.database));
    net.write_tariff_dir(&tariff_dir).unwrap();
    let traffic = traffic(&net, seed + 10);
    (env, tariff_dir, net, traffic)
}

pub fn traffic(net: &Network, seed: u64) -> Traffic {
    Traffic::new(
        TrafficConfig { records: RECORDS, cards: 5_000, seed, ..TrafficConfig::default() },
        net,
    )
}

/// Batches committed so far (any partition).
pub fn committed_batches(env: &Env) -> u64 {
    env.query::<u64>("SELECT count() FROM gantry_batches WHERE phase = 'committed'")[0]
}

/// Lane records the committed batches processed so far (any partition).
pub fn lane_records_processed(env: &Env) -> u64 {
    env.query::<u64>("SELECT sum(lane_records) FROM gantry_batches WHERE phase = 'committed'")[0]
}

/// Starts Gantry again until it has drained everything, requiring a clean exit; what the
/// restart logged.
pub fn restart_until_idle(env: &Env, tariff_dir: &Path, log: &Path) -> String {
    let before = log_text(log).len();
    let config = env.write_config("session_timeout_ms = 6000\nexit_when_idle_ms = 2000\n");
    let mut last = spawn_gantry(&config, tariff_dir, log);
    let status = wait_exit(&mut last, log, "the restart");
    assert!(status.success(), "the restart failed; see {}", log.display());
    log_text(log)[before..].to_string()
}

/// [`traffic`] with no top-ups: the account topic holds the cards' `open`s only.
pub fn traffic_without_topups(net: &Network, seed: u64) -> Traffic {
    let cfg = TrafficConfig {
        records: RECORDS,
        cards: 5_000,
        seed,
        topup_rate: 0.0,
        ..TrafficConfig::default()
    };
    Traffic::new(cfg, net)
}

/// SIGTERM, then the clean exit (status 0) a graceful stop must end with.
pub fn stop_cleanly(child: &mut Child, log: &Path) {
    sigterm(child);
    let status = wait_exit(child, log, "the stop");
    assert!(status.success(), "gantry did not stop cleanly; see {}", log.display());
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Waits until `done()` holds, failing if `child` exits first or it takes `STUCK_AFTER`.
pub fn wait_for(child: &mut Child, log: &Path, what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "gantry exited before {what}; see {}",
            log.display()
        );
        assert!(
            started.elapsed() < STUCK_AFTER,
            "no {what} in {STUCK_AFTER:?}; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `child` to exit by itself, failing if it takes `STUCK_AFTER`; its status.
pub fn wait_exit(child: &mut Child, log: &Path, what: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < STUCK_AFTER,
            "{what} did not finish in {STUCK_AFTER:?}; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}
