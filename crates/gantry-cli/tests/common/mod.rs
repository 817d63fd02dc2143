//! What the binary's integration tests share: starting `gantry run` as a child process.

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
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Running)
        .expect("start gantry")
}
