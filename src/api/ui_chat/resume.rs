//! Streams that outlive their request, so `useChat({ resume: true })` can pick one up: each
//! `/api/chat` answer is produced by its own task into a buffer (every encoded part kept until
//! the answer ends); the request that started it, and any later `GET
//! /api/chat/{id}/stream`, read the buffer from the start and then follow it. A client that
//! disconnects leaves the answer running, to be resumed; it ends as it would have.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use tokio::sync::watch;

/// One running answer's parts so far.
#[derive(Default)]
struct Buffer {
    parts: Vec<String>,
    done: bool,
}

/// A running answer: its parts, and a signal on each new one.
pub struct Running {
    buffer: Mutex<Buffer>,
    changed: watch::Sender<usize>,
}

impl Running {
    fn push(&self, part: String) {
        let n = {
            let mut b = self.buffer.lock().expect("stream buffer lock");
            b.parts.push(part);
            b.parts.len()
        };
        self.changed.send_replace(n);
    }

    fn finish(&self) {
        let n = {
            let mut b = self.buffer.lock().expect("stream buffer lock");
            b.done = true;
            b.parts.len()
        };
        self.changed.send_replace(n + 1);
    }

    /// Every part from the first, then each new one until the answer ends.
    pub fn follow(self: Arc<Self>) -> impl Stream<Item = String> + Send + 'static {
        let mut changed = self.changed.subscribe();
        async_stream::stream! {
            let mut next = 0;
            loop {
                let (batch, done) = {
                    let b = self.buffer.lock().expect("stream buffer lock");
                    (b.parts[next..].to_vec(), b.done)
                };
                next += batch.len();
                for part in batch {
                    yield part;
                }
                if done {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Running answers by (tenant, chat id).
#[derive(Default)]
pub struct Streams {
    running: Mutex<HashMap<(String, String), Arc<Running>>>,
}

impl Streams {
    /// Runs `parts` to the end in its own task, under this chat's id (a newer answer for the
    /// same chat replaces an older one as the one to resume); returns the answer to follow.
    pub fn start(
        self: &Arc<Self>,
        tenant: &str,
        chat_id: &str,
        parts: impl Stream<Item = String> + Send + 'static,
    ) -> Arc<Running> {
        let (changed, _) = watch::channel(0);
        let running = Arc::new(Running {
            buffer: Mutex::new(Buffer::default()),
            changed,
        });
        let key = (tenant.to_string(), chat_id.to_string());
        self.running
            .lock()
            .expect("streams lock")
            .insert(key.clone(), running.clone());
        let (streams, task_running) = (self.clone(), running.clone());
        tokio::spawn(async move {
            let mut parts = std::pin::pin!(parts);
            while let Some(p) = parts.next().await {
                task_running.push(p);
            }
            task_running.finish();
            let mut map = streams.running.lock().expect("streams lock");
            if map.get(&key).is_some_and(|r| Arc::ptr_eq(r, &task_running)) {
                map.remove(&key);
            }
        });
        running
    }

    /// The chat's answer still running, if any.
    pub fn get(&self, tenant: &str, chat_id: &str) -> Option<Arc<Running>> {
        self.running
            .lock()
            .expect("streams lock")
            .get(&(tenant.to_string(), chat_id.to_string()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_follower_gets_every_part_from_the_start_and_the_answer_outlives_it() {
        let streams = Arc::new(Streams::default());
        let (tx, rx) = tokio::sync::mpsc::channel::<String>(4);
        let running = streams.start("t", "c", tokio_stream::wrappers::ReceiverStream::new(rx));
        tx.send("a".into()).await.unwrap();
        // The first reader goes away after one part.
        let first: Vec<String> = running.clone().follow().take(1).collect().await;
        assert_eq!(first, ["a"]);
        tx.send("b".into()).await.unwrap();
        // A resumed reader sees everything, then the rest as it comes.
        let resumed = streams.get("t", "c").expect("still running");
        let reader = tokio::spawn(resumed.follow().collect::<Vec<_>>());
        tx.send("c".into()).await.unwrap();
        drop(tx);
        assert_eq!(reader.await.unwrap(), ["a", "b", "c"]);
        // Once finished, nothing is left to resume; another tenant never had it.
        for _ in 0..100 {
            if streams.get("t", "c").is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(streams.get("t", "c").is_none());
        assert!(streams.get("u", "c").is_none());
    }
}
