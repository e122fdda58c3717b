//! The local sink: each message appended as one JSON line (the CloudEvent) to
//! `FLUXTRAIL_MESSAGES_FILE`, synced before `publish` returns.
//!
//! At-least-once delivery from the outbox means a message can be handed over twice (a crash
//! between the append and the outbox's "delivered" mark). The sink remembers the ids in its
//! file, so each occurrence appears exactly once, across restarts too.

use std::collections::HashSet;
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
}

impl LocalSink {
    pub fn open(path: &Path) -> Result<Self, PublishError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| PublishError::Configuration(format!("{}: {e}", dir.display())))?;
        }
        let mut ids = HashSet::new();
        if let Ok(f) = File::open(path) {
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|e| PublishError::Unavailable(e.to_string()))?;
                if let Some(id) = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string))
                {
                    ids.insert(id);
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| PublishError::Configuration(format!("{}: {e}", path.display())))?;
        Ok(LocalSink {
            path: path.to_path_buf(),
            inner: Arc::new(Mutex::new(Inner { file, ids })),
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
            g.ids.insert(id);
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
