//! The local sink: each message appended as one JSON line (the CloudEvent) to
//! `FLUXTRAIL_MESSAGES_FILE`, synced before `publish` returns.
//!
//! At-least-once delivery from the outbox means a message can be handed over twice (a crash
//! between the append and the outbox's "delivered" mark). The sink remembers the ids of the
//! last `REMEMBERED` messages — read from the file's tail at start — so each occurrence appears
//! exactly once, across restarts too, with memory that does not grow with the file.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{PublishError, Publisher};
use crate::core::Message;

#[derive(Debug, Clone)]
pub struct LocalSink {
    path: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    ids: HashSet<String>,
    order: VecDeque<String>,
    /// The file may end in a torn line (a failed write that could not be cut off, or a
    /// crash mid-write): the next line starts with a newline.
    torn: bool,
}

/// How many recent message ids the sink remembers (a re-hand-over follows its first within
/// seconds to minutes).
const REMEMBERED: usize = 65_536;
/// How much of the file's end is read at start to recall them.
const TAIL_BYTES: u64 = 32 * 1024 * 1024;

impl Inner {
    /// Appends whole lines and syncs them. A write that fails part-way (disk full) is cut off
    /// again, so the file only ever holds whole lines; if even that fails, the next line
    /// starts on a fresh line so the torn one stays alone.
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let len = self.file.metadata()?.len();
        let mut result = Ok(());
        if self.torn {
            result = self.file.write_all(b"\n");
        }
        result = result
            .and_then(|_| self.file.write_all(line))
            .and_then(|_| self.file.sync_data());
        match result {
            Ok(()) => {
                self.torn = false;
                Ok(())
            }
            Err(e) => {
                if self
                    .file
                    .set_len(len)
                    .and_then(|_| self.file.sync_data())
                    .is_err()
                {
                    self.torn = true;
                }
                Err(e)
            }
        }
    }

    fn remember(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            while self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }
}

impl LocalSink {
    pub fn open(path: &Path) -> Result<Self, PublishError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| PublishError::Configuration(format!("{}: {e}", dir.display())))?;
        }
        let mut inner_ids = Vec::new();
        if let Ok(mut f) = File::open(path) {
            use std::io::{Seek, SeekFrom};
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let start = len.saturating_sub(TAIL_BYTES);
            f.seek(SeekFrom::Start(start))
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            let mut lines = BufReader::new(f).lines();
            if start > 0 {
                lines.next(); // a partial line
            }
            for line in lines {
                let line = line.map_err(|e| PublishError::Unavailable(e.to_string()))?;
                if let Some(id) = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string))
                {
                    inner_ids.push(id);
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| PublishError::Configuration(format!("{}: {e}", path.display())))?;
        let torn = ends_mid_line(path);
        let mut inner = Inner {
            file,
            ids: HashSet::new(),
            order: VecDeque::new(),
            torn,
        };
        for id in inner_ids {
            inner.remember(id);
        }
        Ok(LocalSink {
            path: path.to_path_buf(),
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether the file's last byte is not a newline (an empty or missing file is not).
fn ends_mid_line(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut last = [0u8; 1];
    f.seek(SeekFrom::End(-1)).is_ok() && f.read_exact(&mut last).is_ok() && last[0] != b'\n'
}

#[async_trait]
impl Publisher for LocalSink {
    async fn publish(&self, message: &Message) -> Result<(), PublishError> {
        self.publish_all(std::slice::from_ref(message))
            .await
            .map_err(|(_, e)| e)
    }

    /// All of them in one append and one sync: the sync is the cost of a message (an
    /// outbox pass at full load hands over hundreds at once). All or none: a failed append
    /// is cut off again, so nothing of it was delivered.
    async fn publish_all(&self, messages: &[Message]) -> Result<(), (usize, PublishError)> {
        let inner = self.inner.clone();
        let lines: Vec<(String, String)> = messages
            .iter()
            .map(|m| {
                let mut line = m.to_cloudevent().to_string();
                line.push('\n');
                (m.id.clone(), line)
            })
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut g = inner
                .lock()
                .map_err(|_| PublishError::Unavailable("sink lock poisoned".into()))?;
            let mut text = String::new();
            let mut new_ids: Vec<String> = Vec::new();
            let mut batch: HashSet<&str> = HashSet::new();
            for (id, line) in &lines {
                // Handed over before (or twice in this batch): already in the file.
                if g.ids.contains(id) || !batch.insert(id) {
                    continue;
                }
                text.push_str(line);
                new_ids.push(id.clone());
            }
            if text.is_empty() {
                return Ok(());
            }
            g.append(text.as_bytes())
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            for id in new_ids {
                g.remember(id);
            }
            Ok(())
        })
        .await
        .map_err(|e| PublishError::Unavailable(e.to_string()))
        .and_then(|r| r)
        .map_err(|e| (0, e))
    }

    fn backend(&self) -> &'static str {
        "local"
    }

    async fn check(&self) -> Result<(), PublishError> {
        let g = self
            .inner
            .lock()
            .map_err(|_| PublishError::Unavailable("sink lock poisoned".into()))?;
        g.file
            .metadata()
            .map(|_| ())
            .map_err(|e| PublishError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> Message {
        Message::sample("a", id)
    }

    /// Several messages in one hand-over: each once, in order, whether it was handed over
    /// before or twice in the same batch.
    #[tokio::test]
    async fn a_batch_appends_each_new_message_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.jsonl");
        let sink = LocalSink::open(&path).unwrap();
        sink.publish(&message("one")).await.unwrap();
        sink.publish_all(&[
            message("two"),
            message("one"),
            message("three"),
            message("two"),
        ])
        .await
        .unwrap();
        sink.publish_all(&[]).await.unwrap();
        let ids = |text: &str| -> Vec<String> {
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
                .collect()
        };
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(ids(&text), ["\"one\"", "\"two\"", "\"three\""]);
        // Across a restart too.
        let sink = LocalSink::open(&path).unwrap();
        sink.publish_all(&[message("three"), message("four")])
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(ids(&text), ["\"one\"", "\"two\"", "\"three\"", "\"four\""]);
    }

    /// A line torn by a crash (or a full disk) stays alone: the next message starts on a
    /// line of its own, and every complete line is a whole message.
    #[tokio::test]
    async fn a_torn_last_line_does_not_swallow_the_next_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.jsonl");
        std::fs::write(&path, "{\"id\":\"one\"}\n{\"id\":\"tw").unwrap();
        let sink = LocalSink::open(&path).unwrap();
        sink.publish(&message("three")).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[1], "{\"id\":\"tw");
        let last: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(last["id"], "three");
        assert!(text.ends_with('\n'));
    }
}
