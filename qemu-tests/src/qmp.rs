//! A minimal QMP client (QEMU Machine Protocol: JSON lines over a socket).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// A QMP connection in command mode.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Asynchronous events received so far (`{"event": ..., "data": ...}`).
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connects, reads the greeting and negotiates capabilities.
    pub fn connect(sock: &Path) -> Result<Qmp> {
        let stream =
            UnixStream::connect(sock).map_err(|e| Error::Qmp(format!("connecting to {}: {e}", sock.display())))?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| Error::Qmp(e.to_string()))?;
        let writer = stream.try_clone().map_err(|e| Error::Qmp(e.to_string()))?;
        let mut qmp = Qmp { reader: BufReader::new(stream), writer, events: Vec::new() };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Qmp(format!("unexpected greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(|e| Error::Qmp(format!("reading: {e}")))?;
        if n == 0 {
            return Err(Error::Qmp("QEMU closed the QMP connection".into()));
        }
        serde_json::from_str(&line).map_err(|e| Error::Qmp(format!("bad message {line:?}: {e}")))
    }

    /// Runs a command and returns its `return` value; a QMP error is an
    /// [`Error::Qmp`] with QEMU's description. Events that arrive meanwhile
    /// are kept in [`Qmp::events`].
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes()).map_err(|e| Error::Qmp(format!("sending {command}: {e}")))?;
        loop {
            let m = self.read_message()?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                return Err(Error::Qmp(format!(
                    "{command}: {}",
                    e.get("desc").and_then(Value::as_str).unwrap_or("error")
                )));
            }
            if m.get("event").is_some() {
                self.events.push(m);
            }
        }
    }

    /// The names of the events received so far.
    pub fn event_names(&self) -> Vec<String> {
        self.events.iter().filter_map(|e| e.get("event").and_then(Value::as_str)).map(str::to_string).collect()
    }
}
