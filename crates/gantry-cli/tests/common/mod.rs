//! What the binary's integration tests share: starting `gantry run` as a child process,
//! and a broker of a test's own.

// Each test binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `gantry run` child process, killed if the test ends (or fails) while it runs.
pub struct Running(Child);

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
