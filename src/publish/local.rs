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
}

/// How many recent message ids the sink remembers (a re-hand-over follows its first within
/// seconds to minutes).
const REMEMBERED: usize = 65_536;
/// How much of the file's end is read at start to recall them.
const TAIL_BYTES: u64 = 32 * 1024 * 1024;

impl Inner {
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
        let mut inner = Inner {
            file,
            ids: HashSet::new(),
            order: VecDeque::new(),
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

#[async_trait]
impl Publisher for LocalSink {
    async fn publish(&self, message: &Message) -> Result<(), PublishError> {
        let inner = self.inner.clone();
        let id = message.id.clone();
        let mut line = message.to_cloudevent().to_string();
        line.push('\n');
        tokio::task::spawn_blocking(move || {
            let mut g = inner
                .lock()
                .map_err(|_| PublishError::Unavailable("sink lock poisoned".into()))?;
            if g.ids.contains(&id) {
                return Ok(());
            }
            g.file
                .write_all(line.as_bytes())
                .and_then(|_| g.file.sync_data())
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            g.remember(id);
            Ok(())
        })
        .await
        .map_err(|e| PublishError::Unavailable(e.to_string()))?
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
