//! The shared delivery record in a NATS JetStream key-value bucket whose `max_age` is the
//! record's time to live: a batch is read and written as concurrent requests on one connection
//! (pipelined: one round trip of latency for the batch).

use futures_util::future::{join_all, BoxFuture};
use tokio::sync::OnceCell;

use async_nats::jetstream::{self, kv, stream};

use super::Backend;
use crate::{
    config::SharedRecordSettings,
    error::{Error, Result},
};

/// A NATS KV store; the connection and the bucket are made on first use (and the client
/// reconnects by itself after a loss).
pub(super) struct NatsRecord {
    url: String,
    /// `tls://` URLs and a CA file.
    options: Options,
    bucket: Bucket,
    /// Made once; it reconnects by itself.
    client: OnceCell<async_nats::Client>,
    /// Found or created once reachable.
    store: OnceCell<kv::Store>,
}

struct Options {
    tls: bool,
    ca_file: Option<std::path::PathBuf>,
    timeout: std::time::Duration,
}

/// The KV bucket: its name and how long a key lives.
struct Bucket {
    name: String,
    ttl: std::time::Duration,
}

impl Bucket {
    /// The stream behind the bucket, as `create_key_value` lays it out: `KV_{name}` over
    /// `$KV.{name}.>`, one value per key, the time to live as `max_age`, rollups allowed,
    /// direct gets, new writes refused rather than old ones dropped when a limit is reached.
    fn stream(&self) -> stream::Config {
        stream::Config {
            name: format!("KV_{}", self.name),
            description: Some(
                "vodbridge: publishes a broker acknowledged (event id.target)".into(),
            ),
            subjects: vec![format!("$KV.{}.>", self.name)],
            max_messages_per_subject: 1,
            max_age: self.ttl,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: 1,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        }
    }
}

impl NatsRecord {
    /// A store for `settings` (`nats://` or `tls://`); connects on first use.
    pub(super) fn new(settings: &SharedRecordSettings) -> Self {
        Self {
            url: settings.url().to_owned(),
            options: Options {
                tls: settings.url().starts_with("tls://"),
                ca_file: settings.ca_file.clone(),
                timeout: settings.timeout,
            },
            bucket: Bucket {
                name: settings.name.clone(),
                ttl: settings.ttl,
            },
            client: OnceCell::new(),
            store: OnceCell::new(),
        }
    }

    /// The bucket, connecting and creating it (if it does not exist yet) on first use. A
    /// bucket an operator made beforehand (more replicas, other placement) is used as it is.
    async fn store(&self) -> Result<&kv::Store> {
        let client = self
            .client
            .get_or_try_init(|| async {
                let mut options = async_nats::ConnectOptions::new()
                    .connection_timeout(self.options.timeout)
                    .request_timeout(Some(self.options.timeout))
                    // Returns at once and keeps connecting: one client for the process's life.
                    .retry_on_initial_connect()
                    // A silent server is found within two intervals.
                    .ping_interval(std::time::Duration::from_secs(5))
                    .require_tls(self.options.tls);
                if let Some(ca) = &self.options.ca_file {
                    options = options.add_root_certificates(ca.clone());
                }
                options
                    .connect(self.url.as_str())
                    .await
                    .map_err(|e| Error::RecordStore {
                        what: format!("connecting to {}", vodbridge_core::redact_url(&self.url)),
                        source: Box::new(e),
                    })
            })
            .await?;
        self.store
            .get_or_try_init(|| async {
                let context = jetstream::new(client.clone());
                if let Ok(store) = context.get_key_value(&self.bucket.name).await {
                    return Ok(store);
                }
                // The bucket's stream as a KV bucket is laid out (ADR-8), made directly:
                // async-nats's `create_key_value` first reads the account's limits, whose answer
                // from servers before 2.10 it cannot parse.
                context
                    .get_or_create_stream(self.bucket.stream())
                    .await
                    .map_err(|e| Error::RecordStore {
                        what: format!("creating the KV bucket {}", self.bucket.name),
                        source: Box::new(e),
                    })?;
                context
                    .get_key_value(&self.bucket.name)
                    .await
                    .map_err(|e| Error::RecordStore {
                        what: format!("opening the KV bucket {}", self.bucket.name),
                        source: Box::new(e),
                    })
            })
            .await
    }
}

impl Backend for NatsRecord {
    fn get<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move {
            let store = self.store().await?;
            join_all(keys.iter().map(|key| store.get(key.as_str())))
                .await
                .into_iter()
                .map(|found| {
                    found
                        .map(|value| value.is_some())
                        .map_err(|e| Error::RecordStore {
                            what: "reading".into(),
                            source: Box::new(e),
                        })
                })
                .collect()
        })
    }

    fn put<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let store = self.store().await?;
            let value = bytes::Bytes::from_static(b"1");
            for written in join_all(keys.iter().map(|key| store.put(key, value.clone()))).await {
                written.map_err(|e| Error::RecordStore {
                    what: "writing".into(),
                    source: Box::new(e),
                })?;
            }
            Ok(())
        })
    }

    fn reconnect(&self) {
        // The client replaces a connection whose pings go unanswered by itself; this makes it
        // do so now.
        if let Some(client) = self.client.get().cloned() {
            tokio::spawn(async move {
                let _ = client.force_reconnect().await;
            });
        }
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let store = self.store().await?;
            store
                .status()
                .await
                .map(drop)
                .map_err(|e| Error::RecordStore {
                    what: "reading the bucket's status".into(),
                    source: Box::new(e),
                })
        })
    }
}
