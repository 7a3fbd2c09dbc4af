//! A real `redis-server` (the Debian package) on a free loopback port, for
//! the tests of the HA group; stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roomengine_exporter::roomset::Record;

use super::{free_port, SDKAPPID};

/// The path of `tool`, or a failure saying how to install it.
pub fn require(tool: &str) -> PathBuf {
    let found = ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(tool))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!("{tool} is not installed: run `bash tests/ensure-redis.sh` and `bash tests/ensure-nginx.sh` (tests/run.sh does) to install the Debian packages")
    })
}

/// A `redis-server` on a free loopback port, as the tests' HA group runs it.
pub struct Redis {
    pub port: u16,
    password: Option<&'static str>,
    dir: tempfile::TempDir,
    child: Child,
}

impl Redis {
    pub fn start(password: Option<&'static str>) -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Redis::spawn(port, password, dir.path());
        let redis = Redis {
            port,
            password,
            dir,
            child,
        };
        redis.wait_up();
        redis
    }

    pub fn spawn(port: u16, password: Option<&str>, dir: &Path) -> Child {
        let mut command = Command::new(require("redis-server"));
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts")
    }

    pub fn wait_up(&self) {
        let start = Instant::now();
        while self.connection().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "redis-server not answering within 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let url = match self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => self.url(),
        };
        let mut con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(1))?;
        redis::cmd("PING").query::<String>(&mut con)?;
        Ok(con)
    }

    /// The record Redis keeps of `room`.
    pub fn record(&self, room: &str) -> Option<Record> {
        let mut con = self.connection().expect("Redis answers");
        let text: Option<String> = redis::cmd("GET")
            .arg(format!("roomengine:{SDKAPPID}:room:{room}"))
            .query(&mut con)
            .expect("GET");
        text.map(|t| serde_json::from_str(&t).expect("a record"))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and data directory (its AOF).
    pub fn restart(&mut self) {
        self.child = Redis::spawn(self.port, self.password, self.dir.path());
        self.wait_up();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
    }
}
