//! The etcd v3 calls switchyard makes, over the generated gRPC stubs: prefix ranges, puts,
//! deletes, transactions, prefix watches from a revision, leases with keep-alive, and a
//! lease-backed lock for work that one replica at a time may do. Every unary call is bounded
//! by the op timeout, so a dead etcd answers an error instead of a hang. With several
//! endpoints, calls go to one member until it fails, then to the next (`Rotation`).
use super::pb::etcdserverpb as rpc;
use super::pb::v3lockpb as lockpb;
use lockpb::lock_client::LockClient;
use rpc::compare::{CompareResult, CompareTarget, TargetUnion};
use rpc::kv_client::KvClient;
use rpc::lease_client::LeaseClient;
use rpc::watch_client::WatchClient;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// A registry of a few thousand services is well under this; the gRPC default of 4 MiB would
/// make one large range fail for good instead of working.
const MAX_MESSAGE: usize = 64 << 20;
/// HTTP/2 pings find a silently dead etcd under a long watch or lock wait. etcd refuses
/// clients that ping more often than every 5 s (`--grpc-keepalive-min-time`), and pings with
/// no stream open at all, hence not `keep_alive_while_idle`.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
pub struct ConnectOptions {
    /// Bounds each TCP + HTTP/2 handshake with an etcd member.
    pub connect_timeout: Duration,
    /// Bounds each unary call, and the start of each stream.
    pub op_timeout: Duration,
}

#[derive(Debug)]
pub enum Error {
    /// An endpoint that is not an `http://host:port` URL tonic can use.
    Endpoint(String),
    /// The named call did not finish within its timeout.
    Timeout(&'static str),
    /// The named call failed with this gRPC status (including transport errors).
    Status(&'static str, tonic::Status),
    /// The named stream ended, or etcd refused to start it.
    Closed(&'static str, String),
    /// etcd no longer knows this lease (it expired or was revoked).
    LeaseExpired(i64),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Endpoint(e) => write!(f, "endpoint {e}"),
            Error::Timeout(call) => write!(f, "{call} timed out"),
            Error::Status(call, s) if s.message().is_empty() => write!(f, "{call}: {:?}", s.code()),
            Error::Status(call, s) => write!(f, "{call}: {:?}: {}", s.code(), s.message()),
            Error::Closed(call, why) => write!(f, "{call}: {why}"),
            Error::LeaseExpired(id) => write!(f, "lease {id:x} expired"),
        }
    }
}

impl std::error::Error for Error {}

/// The end of the key range that holds every key starting with `prefix`: the prefix with its
/// last byte below 0xff incremented (bytes after it dropped). A prefix of only 0xff bytes, or
/// none, has no such key: `[0]` is etcd's "to the end of the keyspace".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// A comparison of the mod revision of every key in `[key, range_end)` with `revision`
/// (`range_end` empty: `key` alone).
pub fn compare_mod_revision(
    key: &[u8],
    range_end: &[u8],
    result: CompareResult,
    revision: i64,
) -> rpc::Compare {
    rpc::Compare {
        result: result as i32,
        target: CompareTarget::Mod as i32,
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        target_union: Some(TargetUnion::ModRevision(revision)),
    }
}

/// True while `key` exists (its create revision is above 0).
pub fn compare_exists(key: &[u8]) -> rpc::Compare {
    rpc::Compare {
        result: CompareResult::Greater as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(0)),
    }
}

/// True while `key` does not exist (its create revision is 0).
pub fn compare_absent(key: &[u8]) -> rpc::Compare {
    rpc::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(0)),
    }
}

pub fn delete_op(key: &[u8]) -> rpc::RequestOp {
    rpc::RequestOp {
        request: Some(rpc::request_op::Request::RequestDeleteRange(
            rpc::DeleteRangeRequest {
                key: key.to_vec(),
                ..Default::default()
            },
        )),
    }
}

pub fn put_op(key: &[u8], value: &[u8]) -> rpc::RequestOp {
    rpc::RequestOp {
        request: Some(rpc::request_op::Request::RequestPut(rpc::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })),
    }
}

/// Which member calls go to: the current one until a call to it fails for want of a
/// connection (or times out), then the next. A call is never retried on another member by
/// itself: it may have been applied where it failed, so the caller decides.
#[derive(Clone)]
struct Rotation {
    channels: Arc<[Channel]>,
    current: Arc<AtomicUsize>,
}

impl Rotation {
    fn pick(&self) -> (usize, Channel) {
        let i = self.current.load(Relaxed) % self.channels.len();
        (i, self.channels[i].clone())
    }

    /// Member `i` failed: move on, unless a concurrent failure already did.
    fn failed(&self, i: usize) {
        let next = (i + 1) % self.channels.len();
        let _ = self.current.compare_exchange(i, next, Relaxed, Relaxed);
    }

    /// Moves on from member `i` if this error says it is unreachable (a lock wait running
    /// out is contention, not a dead member).
    fn observe<T>(&self, i: usize, r: &Result<T, Error>) {
        let down = match r {
            Err(Error::Timeout(call)) => *call != "lock",
            Err(Error::Status(_, s)) => s.code() == tonic::Code::Unavailable,
            Err(Error::Closed(..)) => true,
            _ => false,
        };
        if down {
            self.failed(i);
        }
    }
}

/// A handle on the etcd cluster; cheap to clone (channels and the current member are shared).
/// tonic dials a member on its first call and re-dials it after a failure by itself.
#[derive(Clone)]
pub struct Client {
    rotation: Rotation,
    op_timeout: Duration,
}

impl Client {
    /// Sets up one channel per endpoint without dialing yet (the first call does), so it fails
    /// only for an endpoint that is not a usable URL. Calls start with the first endpoint.
    /// Needs a tokio runtime.
    pub fn connect(endpoints: &[String], opts: ConnectOptions) -> Result<Client, Error> {
        let mut eps = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let ep = Endpoint::from_shared(e.clone())
                .map_err(|err| Error::Endpoint(format!("{e:?}: {err}")))?
                .connect_timeout(opts.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT);
            eps.push(ep);
        }
        if eps.is_empty() {
            return Err(Error::Endpoint("list is empty".into()));
        }
        let channels: Arc<[Channel]> = eps.into_iter().map(|e| e.connect_lazy()).collect();
        Ok(Client {
            rotation: Rotation {
                channels,
                current: Arc::new(AtomicUsize::new(0)),
            },
            op_timeout: opts.op_timeout,
        })
    }

    /// The index (in the endpoint list) of the member calls go to now.
    pub fn current_endpoint(&self) -> usize {
        self.rotation.pick().0
    }

    /// Runs one call on the current member, bounded by `timeout`.
    async fn unary<T, F, Fut>(
        &self,
        call: &'static str,
        timeout: Duration,
        f: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (i, channel) = self.rotation.pick();
        let r = match tokio::time::timeout(timeout, f(channel)).await {
            Err(_) => Err(Error::Timeout(call)),
            Ok(Err(s)) => Err(Error::Status(call, s)),
            Ok(Ok(r)) => Ok(r.into_inner()),
        };
        self.rotation.observe(i, &r);
        r
    }

    /// One Range call; `call` names it in errors.
    async fn range(
        &self,
        call: &'static str,
        req: rpc::RangeRequest,
    ) -> Result<rpc::RangeResponse, Error> {
        self.unary(call, self.op_timeout, |ch| async move {
            KvClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE)
                .range(req)
                .await
        })
        .await
    }

    /// Every key starting with `prefix`, in key order, and the revision they were read at.
    pub async fn range_prefix(&self, prefix: &[u8]) -> Result<rpc::RangeResponse, Error> {
        let req = rpc::RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            ..Default::default()
        };
        self.range("range", req).await
    }

    /// The value of `key` alone (no prefix match), None when it does not exist.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let req = rpc::RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let r = self.range("get", req).await?;
        Ok(r.kvs
            .into_iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value))
    }

    /// The number of keys under `prefix` and nothing else: etcd answers it from its in-memory
    /// index without reading a value, and its header carries the cluster's current revision.
    pub async fn count_prefix(&self, prefix: &[u8]) -> Result<rpc::RangeResponse, Error> {
        let req = rpc::RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            count_only: true,
            ..Default::default()
        };
        self.range("range", req).await
    }

    /// The number of keys under `prefix` (`count`) and, without values, those modified at or
    /// after `min_mod_revision` (`kvs`): the fleet's cheap "anything new?" check. etcd counts
    /// the whole range; the revision filter only prunes what it sends.
    pub async fn range_prefix_modified_since(
        &self,
        prefix: &[u8],
        min_mod_revision: i64,
    ) -> Result<rpc::RangeResponse, Error> {
        let req = rpc::RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            keys_only: true,
            min_mod_revision,
            ..Default::default()
        };
        self.range("range", req).await
    }

    /// Stores `value` under `key`, attached to `lease` (0: none).
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<rpc::PutResponse, Error> {
        let req = rpc::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        };
        self.unary("put", self.op_timeout, |ch| async move {
            KvClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE)
                .put(req)
                .await
        })
        .await
    }

    /// Deletes `key` (a missing key is no error: `deleted` is 0).
    pub async fn delete(&self, key: &[u8]) -> Result<rpc::DeleteRangeResponse, Error> {
        let req = rpc::DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        self.unary("delete", self.op_timeout, |ch| async move {
            KvClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE)
                .delete_range(req)
                .await
        })
        .await
    }

    /// Runs `success` if every comparison in `compare` holds, else `failure`, atomically.
    pub async fn txn(
        &self,
        compare: Vec<rpc::Compare>,
        success: Vec<rpc::RequestOp>,
        failure: Vec<rpc::RequestOp>,
    ) -> Result<rpc::TxnResponse, Error> {
        let req = rpc::TxnRequest {
            compare,
            success,
            failure,
        };
        self.unary("transaction", self.op_timeout, |ch| async move {
            KvClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE)
                .txn(req)
                .await
        })
        .await
    }

    /// Follows every key under `prefix` from `start_revision` on (0: from now). Returns once
    /// etcd confirmed the watch; a revision already compacted away shows as a response with
    /// `compact_revision` set and `canceled`.
    pub async fn watch_prefix(&self, prefix: &[u8], start_revision: i64) -> Result<Watch, Error> {
        let (tx, rx) = mpsc::channel(1);
        let create = rpc::WatchRequest {
            request_union: Some(rpc::watch_request::RequestUnion::CreateRequest(
                rpc::WatchCreateRequest {
                    key: prefix.to_vec(),
                    range_end: prefix_end(prefix),
                    start_revision,
                    ..Default::default()
                },
            )),
        };
        // Buffered before the call: the channel has room for one.
        tx.try_send(create)
            .map_err(|e| Error::Closed("watch", e.to_string()))?;
        let (i, channel) = self.rotation.pick();
        let started = async {
            let mut responses = tokio::time::timeout(
                self.op_timeout,
                WatchClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .watch(ReceiverStream::new(rx)),
            )
            .await
            .map_err(|_| Error::Timeout("watch"))?
            .map_err(|s| Error::Status("watch", s))?
            .into_inner();
            let first = tokio::time::timeout(self.op_timeout, responses.message())
                .await
                .map_err(|_| Error::Timeout("watch"))?
                .map_err(|s| Error::Status("watch", s))?
                .ok_or_else(|| Error::Closed("watch", "closed before it was created".into()))?;
            Ok((responses, first))
        }
        .await;
        self.rotation.observe(i, &started);
        let (responses, first) = started?;
        if !first.created {
            let why = format!("etcd did not create it: {}", first.cancel_reason);
            return Err(Error::Closed("watch", why));
        }
        let pending = first.canceled.then_some(first.clone());
        Ok(Watch {
            _requests: tx,
            responses,
            pending,
            watch_id: first.watch_id,
            rotation: self.rotation.clone(),
            member: i,
        })
    }

    /// A new lease of (at least) `ttl`; etcd may round it up to its minimum.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<Lease, Error> {
        let req = rpc::LeaseGrantRequest {
            ttl: ttl.as_secs_f64().ceil().max(1.0) as i64,
            id: 0,
        };
        let r = self
            .unary("lease grant", self.op_timeout, |ch| async move {
                LeaseClient::new(ch).lease_grant(req).await
            })
            .await?;
        if !r.error.is_empty() {
            return Err(Error::Closed("lease grant", r.error));
        }
        Ok(Lease {
            id: r.id,
            ttl: r.ttl,
        })
    }

    /// Ends the lease now; every key attached to it is deleted.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), Error> {
        self.unary("lease revoke", self.op_timeout, |ch| async move {
            let req = rpc::LeaseRevokeRequest { id };
            LeaseClient::new(ch).lease_revoke(req).await
        })
        .await
        .map(drop)
    }

    /// Seconds the lease has left; `None` if etcd no longer has it.
    pub async fn lease_ttl(&self, id: i64) -> Result<Option<i64>, Error> {
        let r = self
            .unary("lease time-to-live", self.op_timeout, |ch| async move {
                let req = rpc::LeaseTimeToLiveRequest { id, keys: false };
                LeaseClient::new(ch).lease_time_to_live(req).await
            })
            .await?;
        Ok((r.ttl > 0).then_some(r.ttl))
    }

    /// Opens the keep-alive stream for lease `id`, renewing it once; each `KeepAlive::renew`
    /// renews it again.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<KeepAlive, Error> {
        let (tx, rx) = mpsc::channel(1);
        // etcd answers the stream's headers only with its first response, so the first
        // request must be on its way before the call can return.
        tx.try_send(rpc::LeaseKeepAliveRequest { id })
            .map_err(|e| Error::Closed("lease keep-alive", e.to_string()))?;
        let responses = self
            .unary("lease keep-alive", self.op_timeout, |ch| async move {
                LeaseClient::new(ch)
                    .lease_keep_alive(ReceiverStream::new(rx))
                    .await
            })
            .await?;
        let mut ka = KeepAlive {
            id,
            requests: tx,
            responses,
            op_timeout: self.op_timeout,
            ttl: 0,
        };
        ka.ttl = ka.response().await?;
        Ok(ka)
    }

    /// Waits up to `wait` for the lock `name`, held by `lease` once acquired; returns the
    /// key that stands for the ownership (it lives as long as the lease).
    pub async fn lock(&self, name: &[u8], lease: i64, wait: Duration) -> Result<Vec<u8>, Error> {
        let req = lockpb::LockRequest {
            name: name.to_vec(),
            lease,
        };
        let r = self
            .unary("lock", wait, |ch| async move {
                LockClient::new(ch).lock(req).await
            })
            .await?;
        Ok(r.key)
    }

    pub async fn unlock(&self, key: &[u8]) -> Result<(), Error> {
        let req = lockpb::UnlockRequest { key: key.to_vec() };
        self.unary("unlock", self.op_timeout, |ch| async move {
            LockClient::new(ch).unlock(req).await
        })
        .await
        .map(drop)
    }

    /// Mutual exclusion across replicas: waits up to `wait` for the lock `name` under a fresh
    /// lease of `ttl` that a background task keeps alive. If this process dies, the lease runs
    /// out after `ttl` and the next waiter gets the lock. Work that must not run twice should
    /// write its result with a transaction guarded by `LockGuard::still_held`, so a holder
    /// whose lease expired unnoticed cannot overwrite its successor.
    pub async fn acquire(
        &self,
        name: &[u8],
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard, Error> {
        let lease = self.lease_grant(ttl).await?;
        let held = Arc::new(AtomicBool::new(true));
        let keeper = tokio::spawn(keep_alive_task(self.clone(), lease, held.clone()));
        match self.lock(name, lease.id, wait).await {
            Ok(key) => Ok(LockGuard {
                client: self.clone(),
                key,
                lease: lease.id,
                held,
                keeper,
                released: false,
            }),
            Err(e) => {
                keeper.abort();
                // Revoking also removes our place in the queue of waiters.
                let _ = self.lease_revoke(lease.id).await;
                Err(e)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Seconds, as granted.
    pub ttl: i64,
}

/// A watch on a prefix; dropping it ends the gRPC stream and so the watch.
pub struct Watch {
    /// Kept so the request half of the stream stays open: closing it ends the watch.
    _requests: mpsc::Sender<rpc::WatchRequest>,
    responses: tonic::Streaming<rpc::WatchResponse>,
    /// A cancellation that came with the creation, handed out by the first `message`.
    pending: Option<rpc::WatchResponse>,
    pub watch_id: i64,
    rotation: Rotation,
    member: usize,
}

impl Watch {
    /// The next response; `None` when etcd closed the stream. No timeout: a quiet prefix
    /// sends nothing, and a dead connection shows as an error through the HTTP/2 pings.
    pub async fn message(&mut self) -> Result<Option<rpc::WatchResponse>, Error> {
        if let Some(r) = self.pending.take() {
            return Ok(Some(r));
        }
        let r = self
            .responses
            .message()
            .await
            .map_err(|s| Error::Status("watch", s));
        self.rotation.observe(self.member, &r);
        r
    }
}

/// The keep-alive stream of one lease.
pub struct KeepAlive {
    pub id: i64,
    /// Seconds left after the last renewal.
    pub ttl: i64,
    requests: mpsc::Sender<rpc::LeaseKeepAliveRequest>,
    responses: tonic::Streaming<rpc::LeaseKeepAliveResponse>,
    op_timeout: Duration,
}

impl KeepAlive {
    /// Renews the lease; returns its new TTL in seconds.
    pub async fn renew(&mut self) -> Result<i64, Error> {
        let req = rpc::LeaseKeepAliveRequest { id: self.id };
        tokio::time::timeout(self.op_timeout, self.requests.send(req))
            .await
            .map_err(|_| Error::Timeout("lease keep-alive"))?
            .map_err(|_| Error::Closed("lease keep-alive", "stream closed".into()))?;
        self.ttl = self.response().await?;
        Ok(self.ttl)
    }

    /// The answer to the renewal just sent.
    async fn response(&mut self) -> Result<i64, Error> {
        let r = tokio::time::timeout(self.op_timeout, self.responses.message())
            .await
            .map_err(|_| Error::Timeout("lease keep-alive"))?;
        match r {
            Ok(Some(r)) if r.ttl > 0 => Ok(r.ttl),
            Ok(Some(_)) => Err(Error::LeaseExpired(self.id)),
            Ok(None) => Err(Error::Closed("lease keep-alive", "stream closed".into())),
            Err(s) => Err(Error::Status("lease keep-alive", s)),
        }
    }
}

/// Renews `lease` a few times per TTL, reopening the stream after errors, until the lease is
/// gone or could not be renewed for a whole TTL; then clears `held`.
async fn keep_alive_task(client: Client, lease: Lease, held: Arc<AtomicBool>) {
    let ttl = Duration::from_secs(lease.ttl.max(1) as u64);
    let every = ttl / 3;
    let mut last_renewal = tokio::time::Instant::now();
    let mut stream: Option<KeepAlive> = None;
    loop {
        tokio::time::sleep(every).await;
        // Opening the stream renews the lease once by itself.
        let result = match stream.as_mut() {
            Some(ka) => ka.renew().await,
            None => client.lease_keep_alive(lease.id).await.map(|ka| {
                let ttl = ka.ttl;
                stream = Some(ka);
                ttl
            }),
        };
        match result {
            Ok(_) => last_renewal = tokio::time::Instant::now(),
            Err(Error::LeaseExpired(_)) => break,
            Err(e) => {
                log::warn!("etcd: renewing lease {:x}: {e}", lease.id);
                stream = None;
                if last_renewal.elapsed() >= ttl {
                    break;
                }
            }
        }
    }
    log::warn!("etcd: lease {:x} lost; the lock it held is free", lease.id);
    held.store(false, Relaxed);
}

/// Ownership of an etcd lock (see `Client::acquire`). `release` gives it back at once;
/// dropping the guard revokes the lease in the background, or lets it expire.
pub struct LockGuard {
    client: Client,
    key: Vec<u8>,
    lease: i64,
    held: Arc<AtomicBool>,
    keeper: tokio::task::JoinHandle<()>,
    released: bool,
}

impl LockGuard {
    /// The key that exists exactly while this lock is held.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// False once the lease could not be kept alive: another replica may hold the lock now.
    pub fn is_held(&self) -> bool {
        self.held.load(Relaxed)
    }

    /// The comparison that holds only while this lock is held, to guard a transaction.
    pub fn still_held(&self) -> rpc::Compare {
        compare_exists(&self.key)
    }

    /// Unlocks and revokes the lease.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        self.keeper.abort();
        let unlocked = self.client.unlock(&self.key).await;
        let revoked = self.client.lease_revoke(self.lease).await;
        unlocked.and(revoked)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.keeper.abort();
        if self.released {
            return;
        }
        // Best effort; should it not get through, the lease expires after its TTL anyway.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (client, lease) = (self.client.clone(), self.lease);
            rt.spawn(async move {
                let _ = client.lease_revoke(lease).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_ff() {
        assert_eq!(
            prefix_end(b"/switchyard/services/"),
            b"/switchyard/services0"
        );
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"a\xfe\xff\xff"), b"a\xff");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }

    #[test]
    fn comparisons_target_what_they_say() {
        let c = compare_mod_revision(b"p/", b"p0", CompareResult::Less, 8);
        assert_eq!(c.target, CompareTarget::Mod as i32);
        assert_eq!(c.result, CompareResult::Less as i32);
        assert_eq!(
            (c.key.as_slice(), c.range_end.as_slice()),
            (&b"p/"[..], &b"p0"[..])
        );
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(8)));
        let e = compare_exists(b"k");
        assert_eq!(e.target, CompareTarget::Create as i32);
        assert_eq!(e.result, CompareResult::Greater as i32);
        assert_eq!(e.target_union, Some(TargetUnion::CreateRevision(0)));
    }

    #[tokio::test]
    async fn bad_endpoints_are_refused_before_any_call() {
        let opts = ConnectOptions {
            connect_timeout: Duration::from_secs(1),
            op_timeout: Duration::from_secs(1),
        };
        let Err(e) = Client::connect(&[], opts) else {
            panic!("empty list accepted")
        };
        assert_eq!(e.to_string(), "endpoint list is empty");
        let Err(e) = Client::connect(&["not a url".to_string()], opts) else {
            panic!("bad url accepted")
        };
        assert!(e.to_string().starts_with("endpoint \"not a url\""), "{e}");
    }

    #[test]
    fn errors_name_the_call() {
        assert_eq!(Error::Timeout("range").to_string(), "range timed out");
        let s = tonic::Status::unavailable("connection refused");
        assert_eq!(
            Error::Status("put", s).to_string(),
            "put: Unavailable: connection refused"
        );
        assert_eq!(Error::LeaseExpired(255).to_string(), "lease ff expired");
    }
}
