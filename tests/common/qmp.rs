//! QMP client. QEMU connects to a socket the test listens on; the test reads the
//! greeting, negotiates capabilities, then runs commands. Events that arrive while a
//! reply is awaited are queued for `wait_event`.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::line_stream::LineStream;

/// How long a QMP command may take to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum QmpError {
    /// QEMU answered `{"error": {"class": …, "desc": …}}`.
    Command { class: String, desc: String },
    /// The connection failed (QEMU exiting resets it).
    Io(io::Error),
    /// Something that is not QMP arrived.
    Protocol(String),
}

impl fmt::Display for QmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QmpError::Command { class, desc } => write!(f, "QMP error {class}: {desc}"),
            QmpError::Io(err) => write!(f, "QMP I/O error: {err}"),
            QmpError::Protocol(what) => write!(f, "QMP protocol error: {what}"),
        }
    }
}

impl From<io::Error> for QmpError {
    fn from(err: io::Error) -> Self {
        QmpError::Io(err)
    }
}

pub struct Qmp {
    conn: LineStream,
    events: VecDeque<Value>,
    next_id: u64,
}

impl Qmp {
    /// Reads the greeting and sends `qmp_capabilities`.
    pub fn handshake(stream: UnixStream, deadline: Instant) -> Result<Qmp, QmpError> {
        let mut qmp = Qmp {
            conn: LineStream::new(stream)?,
            events: VecDeque::new(),
            next_id: 1,
        };
        let greeting = qmp.read_message(deadline)?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "expected greeting, got {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments` (a JSON object) and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"execute": command, "arguments": arguments, "id": id});
        self.conn.send_line(&request.to_string())?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let message = self.read_message(deadline)?;
            if message.get("event").is_some() {
                self.events.push_back(message);
                continue;
            }
            if message.get("id") != Some(&json!(id)) {
                return Err(QmpError::Protocol(format!(
                    "reply to {command} has the wrong id: {message}"
                )));
            }
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            let error = &message["error"];
            return Err(QmpError::Command {
                class: error["class"].as_str().unwrap_or("?").to_string(),
                desc: error["desc"].as_str().unwrap_or("?").to_string(),
            });
        }
    }

    /// Removes and returns the oldest event named `name`, reading more as needed.
    pub fn wait_event(&mut self, name: &str, deadline: Instant) -> Result<Value, QmpError> {
        loop {
            if let Some(at) = self.events.iter().position(|e| e["event"] == name) {
                return Ok(self.events.remove(at).expect("index from position"));
            }
            let message = self.read_message(deadline)?;
            if message.get("event").is_none() {
                return Err(QmpError::Protocol(format!("unsolicited reply {message}")));
            }
            self.events.push_back(message);
        }
    }

    /// The current runstate, e.g. `prelaunch`, `running`, `paused`, `inmigrate`.
    pub fn runstate(&mut self) -> Result<String, QmpError> {
        let status = self.execute("query-status", json!({}))?;
        status["status"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| QmpError::Protocol(format!("query-status gave {status}")))
    }

    fn read_message(&mut self, deadline: Instant) -> Result<Value, QmpError> {
        let line = self.conn.read_line(deadline)?;
        serde_json::from_str(&line)
            .map_err(|err| QmpError::Protocol(format!("not JSON ({err}): {line:?}")))
    }
}
