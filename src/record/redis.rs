//! The shared delivery record in Redis or Valkey: `MGET` to read a batch, one pipeline of
//! `SET key 1 EX ttl` to write one, over redis-rs's reconnecting connection manager.

use std::sync::{Mutex, PoisonError};

use futures_util::future::BoxFuture;
use redis::{aio::ConnectionManager, aio::ConnectionManagerConfig, Client};

use super::Backend;
use crate::{
    config::SharedRecordSettings,
    error::{Error, Result},
};

/// A Redis/Valkey store (standalone or behind a proxy; `MGET` needs all keys on one node, so
/// Redis Cluster is not supported).
pub(super) struct RedisRecord {
    /// Connects lazily on the first command and again after a loss; replaced by
    /// [`Backend::reconnect`] after a timeout (it does not notice a silent connection itself).
    connection: Mutex<ConnectionManager>,
    /// Makes the replacements.
    client: Client,
    config: ConnectionManagerConfig,
    /// Prepended to every key with a `:`.
    prefix: String,
    /// Time to live of every key, in seconds.
    ttl_secs: u64,
}

impl RedisRecord {
    /// A store for `settings` (`redis://` or `rediss://`); connects on first use.
    ///
    /// # Errors
    ///
    /// [`Error::RecordStore`] when the URL does not parse or the CA file cannot be read.
    pub(super) fn new(settings: &SharedRecordSettings) -> Result<Self> {
        let client = match &settings.ca_file {
            Some(path) => {
                let root = std::fs::read(path).map_err(|source| Error::RecordStore {
                    what: format!("reading the CA file {}", path.display()),
                    source: Box::new(source),
                })?;
                Client::build_with_tls(
                    settings.url(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root),
                    },
                )
            }
            None => Client::open(settings.url()),
        }
        .map_err(failed("the Redis URL"))?;
        // Commands fail after the record's timeout; a lost connection is replaced on the next
        // command (one quick retry, no long backoff: the caller fails open instead of waiting).
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(settings.timeout);
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(failed("the connection manager"))?;
        Ok(Self {
            connection: Mutex::new(connection),
            client,
            config,
            prefix: settings.name.clone(),
            ttl_secs: settings.ttl.as_secs(),
        })
    }

    /// The current connection (a cheap clone).
    fn connection(&self) -> ConnectionManager {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }
}

fn failed(what: &'static str) -> impl Fn(redis::RedisError) -> Error {
    move |source| Error::RecordStore {
        what: what.to_owned(),
        source: Box::new(source),
    }
}

impl Backend for RedisRecord {
    fn get<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move {
            let mut connection = self.connection();
            let mut command = redis::cmd("MGET");
            for key in keys {
                command.arg(self.key(key));
            }
            let values: Vec<Option<Vec<u8>>> = command
                .query_async(&mut connection)
                .await
                .map_err(failed("reading (MGET)"))?;
            Ok(values.into_iter().map(|v| v.is_some()).collect())
        })
    }

    fn put<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut connection = self.connection();
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.cmd("SET")
                    .arg(self.key(key))
                    .arg(1)
                    .arg("EX")
                    .arg(self.ttl_secs)
                    .ignore();
            }
            pipe.query_async::<()>(&mut connection)
                .await
                .map_err(failed("writing (SET EX)"))
        })
    }

    fn reconnect(&self) {
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(fresh) => {
                *self
                    .connection
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = fresh;
            }
            Err(error) => {
                tracing::debug!(error = %error, "Cannot replace the shared record's Redis connection.");
            }
        }
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut connection = self.connection();
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(drop)
                .map_err(failed("PING"))
        })
    }
}
