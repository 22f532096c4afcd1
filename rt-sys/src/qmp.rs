//! A minimal QMP (QEMU Machine Protocol) client over a unix socket: the greeting,
//! `qmp_capabilities`, `query-cpus-fast` (each vCPU's host thread id and QOM path),
//! `qom-get` (a property of a QOM object, e.g. a vCPU's `tsc-deadline`) and
//! `query-cpu-model-expansion` (what a CPU model, e.g. `host`, offers).
//!
//! QMP is line-oriented JSON; asynchronous events (`{"event": ...}`) may arrive between
//! a command and its `return`, and are skipped. See
//! <https://www.qemu.org/docs/master/interop/qmp-spec.html> and
//! <https://www.qemu.org/docs/master/interop/qemu-qmp-ref.html> (`query-cpus-fast`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Errors talking QMP; each names the socket.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Connecting, reading or writing the socket failed.
    #[error("QMP I/O on {socket}")]
    Io {
        /// The socket path.
        socket: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU answered something we cannot use.
    #[error("QMP protocol error on {socket}: {detail}")]
    Protocol {
        /// The socket path.
        socket: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

/// One vCPU as `query-cpus-fast` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QmpCpu {
    /// `cpu-index`.
    pub cpu_index: u32,
    /// `thread-id`: the host thread running this vCPU.
    pub thread_id: u32,
}

/// Parse the `return` value of `query-cpus-fast`.
pub fn parse_cpus_fast(ret: &Value) -> Result<Vec<QmpCpu>, String> {
    let arr = ret.as_array().ok_or("return is not an array")?;
    let mut out = Vec::with_capacity(arr.len());
    for (i, c) in arr.iter().enumerate() {
        let num = |k: &str| -> Result<u32, String> {
            c.get(k)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| format!("entry {i} has no valid {k:?}"))
        };
        out.push(QmpCpu {
            cpu_index: num("cpu-index")?,
            thread_id: num("thread-id")?,
        });
    }
    Ok(out)
}

/// The QOM paths of the vCPUs in a `query-cpus-fast` return value, by `cpu-index`.
pub fn parse_cpu_paths(ret: &Value) -> Result<Vec<(u32, String)>, String> {
    let arr = ret.as_array().ok_or("return is not an array")?;
    arr.iter()
        .enumerate()
        .map(|(i, c)| {
            let idx = c
                .get("cpu-index")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| format!("entry {i} has no valid \"cpu-index\""))?;
            let path = c
                .get("qom-path")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("entry {i} has no \"qom-path\""))?;
            Ok((idx, path.to_string()))
        })
        .collect()
}

/// The boolean properties of a `query-cpu-model-expansion` return value
/// (`{"model": {"name": ..., "props": {...}}}`).
pub fn parse_model_props(ret: &Value) -> Result<BTreeMap<String, bool>, String> {
    let props = ret
        .get("model")
        .and_then(|m| m.get("props"))
        .and_then(Value::as_object)
        .ok_or("return has no model.props")?;
    Ok(props
        .iter()
        .filter_map(|(k, v)| v.as_bool().map(|b| (k.clone(), b)))
        .collect())
}

/// What one reply line is: a command's result, an error, an event or the greeting.
pub fn classify_reply(line: &str) -> Result<Reply, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(r) = v.get("return") {
        return Ok(Reply::Return(r.clone()));
    }
    if let Some(e) = v.get("error") {
        let class = e.get("class").and_then(Value::as_str).unwrap_or("?");
        let desc = e.get("desc").and_then(Value::as_str).unwrap_or("?");
        return Ok(Reply::Error(format!("{class}: {desc}")));
    }
    if v.get("event").is_some() {
        return Ok(Reply::Event);
    }
    if v.get("QMP").is_some() {
        return Ok(Reply::Greeting);
    }
    Err(format!("unexpected message {line:?}"))
}

/// A classified QMP message.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `{"return": ...}`.
    Return(Value),
    /// `{"error": {...}}`, as `class: desc`.
    Error(String),
    /// An asynchronous event.
    Event,
    /// The server greeting.
    Greeting,
}

/// A connected QMP session in command mode.
#[derive(Debug)]
pub struct Qmp {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connect, read the greeting and enter command mode (`qmp_capabilities`).
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let io = |source| QmpError::Io {
            socket: socket.to_path_buf(),
            source,
        };
        let s = UnixStream::connect(socket).map_err(io)?;
        s.set_read_timeout(Some(timeout)).map_err(io)?;
        s.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = s.try_clone().map_err(io)?;
        let mut q = Qmp {
            socket: socket.to_path_buf(),
            reader: BufReader::new(s),
            writer,
        };
        match q.next()? {
            Reply::Greeting => {}
            other => return Err(q.proto(format!("expected the greeting, got {other:?}"))),
        }
        q.execute("qmp_capabilities")?;
        Ok(q)
    }

    fn proto(&self, detail: String) -> QmpError {
        QmpError::Protocol {
            socket: self.socket.clone(),
            detail,
        }
    }

    fn next(&mut self) -> Result<Reply, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| QmpError::Io {
                socket: self.socket.clone(),
                source,
            })?;
        if n == 0 {
            return Err(self.proto("connection closed".into()));
        }
        classify_reply(&line).map_err(|d| self.proto(d))
    }

    /// Run a command without arguments and return its `return` value.
    pub fn execute(&mut self, command: &str) -> Result<Value, QmpError> {
        self.execute_with(command, None)
    }

    /// Run a command with `arguments` and return its `return` value.
    pub fn execute_with(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let msg = match arguments {
            Some(a) => serde_json::json!({ "execute": command, "arguments": a }),
            None => serde_json::json!({ "execute": command }),
        }
        .to_string()
            + "\n";
        self.writer
            .write_all(msg.as_bytes())
            .map_err(|source| QmpError::Io {
                socket: self.socket.clone(),
                source,
            })?;
        loop {
            match self.next()? {
                Reply::Return(v) => return Ok(v),
                Reply::Error(e) => return Err(self.proto(format!("{command}: {e}"))),
                Reply::Event | Reply::Greeting => continue,
            }
        }
    }

    /// The vCPUs and their host thread ids.
    pub fn cpus_fast(&mut self) -> Result<Vec<QmpCpu>, QmpError> {
        let v = self.execute("query-cpus-fast")?;
        parse_cpus_fast(&v).map_err(|d| self.proto(format!("query-cpus-fast: {d}")))
    }

    /// The QOM paths of the vCPUs, by index.
    pub fn cpu_paths(&mut self) -> Result<Vec<(u32, String)>, QmpError> {
        let v = self.execute("query-cpus-fast")?;
        parse_cpu_paths(&v).map_err(|d| self.proto(format!("query-cpus-fast: {d}")))
    }

    /// `qom-get`: property `property` of the object at `path`.
    pub fn qom_get(&mut self, path: &str, property: &str) -> Result<Value, QmpError> {
        self.execute_with(
            "qom-get",
            Some(serde_json::json!({"path": path, "property": property})),
        )
    }

    /// `query-cpu-model-expansion` (type full) of `model`: its boolean properties.
    pub fn model_props(&mut self, model: &str) -> Result<BTreeMap<String, bool>, QmpError> {
        let v = self.execute_with(
            "query-cpu-model-expansion",
            Some(serde_json::json!({"type": "full", "model": {"name": model}})),
        )?;
        parse_model_props(&v).map_err(|d| self.proto(format!("query-cpu-model-expansion: {d}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    // The shape QEMU 8/9 returns for `query-cpus-fast` (x86_64, TCG), trimmed.
    const CPUS: &str = r#"{"return": [{"thread-id": 2350, "props": {"core-id": 0, "thread-id": 0, "node-id": 0, "socket-id": 0}, "qom-path": "/machine/unattached/device[0]", "cpu-index": 0, "target": "x86_64"}, {"thread-id": 2351, "props": {"core-id": 0, "thread-id": 0, "socket-id": 1}, "qom-path": "/machine/unattached/device[2]", "cpu-index": 1, "target": "x86_64"}]}"#;

    #[test]
    fn parses_query_cpus_fast() {
        let Reply::Return(v) = classify_reply(CPUS).unwrap() else {
            panic!("not a return")
        };
        let c = parse_cpus_fast(&v).unwrap();
        assert_eq!(
            c,
            vec![
                QmpCpu {
                    cpu_index: 0,
                    thread_id: 2350
                },
                QmpCpu {
                    cpu_index: 1,
                    thread_id: 2351
                }
            ]
        );
        let e = (parse_cpus_fast(&serde_json::json!([{"cpu-index": 0}])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no valid \"thread-id\""), "{e}");
        assert_eq!(
            classify_reply(r#"{"error": {"class": "CommandNotFound", "desc": "x"}}"#).unwrap(),
            Reply::Error("CommandNotFound: x".into())
        );
        assert_eq!(
            classify_reply(r#"{"timestamp": {}, "event": "STOP"}"#).unwrap(),
            Reply::Event
        );
    }

    #[test]
    fn parses_cpu_paths_and_model_props() {
        let Reply::Return(v) = classify_reply(CPUS).unwrap() else {
            panic!("not a return")
        };
        assert_eq!(
            parse_cpu_paths(&v).unwrap(),
            [
                (0, "/machine/unattached/device[0]".to_string()),
                (1, "/machine/unattached/device[2]".to_string())
            ]
        );
        // Trimmed from QEMU 7.2 `query-cpu-model-expansion` of `max` under TCG.
        let exp = serde_json::json!({"model": {"name": "max", "props": {
            "tsc-deadline": false, "pmu": false, "phys-bits": 0, "vendor": "AuthenticAMD",
            "kvm-hint-dedicated": false, "invtsc": false, "sse2": true}}});
        let p = parse_model_props(&exp).unwrap();
        assert_eq!(p.get("sse2"), Some(&true));
        assert_eq!(p.get("tsc-deadline"), Some(&false));
        assert!(!p.contains_key("vendor") && !p.contains_key("phys-bits"));
        let e = (parse_model_props(&serde_json::json!({})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no model.props"), "{e}");
    }

    #[test]
    fn talks_to_a_fake_server_and_skips_events() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"));
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("query-cpus-fast"));
            writeln!(w, r#"{{"event": "RESUME", "timestamp": {{}}}}"#).unwrap();
            writeln!(w, "{CPUS}").unwrap();
        });
        let mut q = Qmp::connect(&sock, Duration::from_secs(5)).unwrap();
        let c = q.cpus_fast().unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].thread_id, 2351);
        server.join().unwrap();
        let e = Qmp::connect(&dir.path().join("nope"), Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
