//! The lease driver of a standby group: performs a [`Contender`]'s actions
//! against the store and tells the live publish driver, through a
//! [`Fence`], whether it may write.
//!
//! Contract:
//! - Every action is bounded by the lease's request timeout (a renewal's
//!   write and its check of the next generation together), so a write this
//!   process started has ended, or been abandoned, within that time: the
//!   bound the lease's safety rests on (see [`super::lease`]).
//! - The fence opens only while the contender holds a valid lease, and the
//!   live driver asks it before every operation ([`Fence::may_write`]), so a
//!   leader that lost its lease while paused writes nothing when it wakes.
//! - Role changes are logged with their cause; [`Fence::standing`] shows
//!   them to the control API.
//! - A lease record that cannot be read as one counts as expired, so a
//!   stray object never keeps a stream without a leader.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::layout;
use super::lease::{Action, Change, Contender, LeaseRecord, LeaseSettings, Outcome, Role};
use super::store::Store;
use crate::hls::PartId;

/// Where a process stands in its standby group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Standing {
    /// Leader, standby, or starting (the lease not read yet).
    pub role: Role,
    /// This process's holder id.
    pub holder: String,
    /// The newest lease generation known.
    pub generation: Option<u64>,
    /// Who holds the newest generation known, if read.
    pub leader: Option<String>,
    /// The part the leader last listed, by its lease record: a standby's
    /// backlog forgets what is stored up to there.
    #[serde(skip)]
    pub leader_listed: Option<PartId>,
    /// The last change of role: its cause and wall-clock time (ms).
    pub last_change: Option<(Change, i64)>,
    /// Until when this process may write (a leader's lease, less the
    /// margin).
    #[serde(skip)]
    pub valid_until: Option<Instant>,
}

/// The live driver's view of the lease: may it write now?
#[derive(Debug, Clone)]
pub struct Fence {
    rx: watch::Receiver<Standing>,
}

impl Fence {
    /// Whether a store write may start at `now`.
    pub fn may_write(&self, now: Instant) -> bool {
        self.rx
            .borrow()
            .valid_until
            .is_some_and(|until| now < until)
    }

    /// Where the process stands now.
    pub fn standing(&self) -> Standing {
        self.rx.borrow().clone()
    }

    /// Waits for the next change of standing (at least every renewal while
    /// leading); returns at once if the driver has ended.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Starts the lease driver of `stream` on the current runtime. `listed`
/// says what this process has listed (for its renewal records).
pub fn spawn_lease(
    store: Store,
    stream: &str,
    holder: String,
    settings: LeaseSettings,
    listed: impl Fn() -> Option<PartId> + Send + 'static,
) -> (Fence, JoinHandle<()>) {
    let contender = Contender::new(holder.clone(), settings);
    let (tx, rx) = watch::channel(Standing {
        role: Role::Starting,
        holder,
        generation: None,
        leader: None,
        leader_listed: None,
        last_change: None,
        valid_until: None,
    });
    let driver = LeaseDriver {
        store: Arc::clone(store.object_store()),
        url: store.url().to_owned(),
        stream: stream.to_owned(),
        settings,
        contender,
        tx,
        base: Instant::now(),
    };
    (Fence { rx }, tokio::spawn(driver.run(listed)))
}

struct LeaseDriver {
    store: Arc<dyn ObjectStore>,
    url: String,
    stream: String,
    settings: LeaseSettings,
    contender: Contender,
    tx: watch::Sender<Standing>,
    base: Instant,
}

impl LeaseDriver {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn run(mut self, listed: impl Fn() -> Option<PartId>) {
        let mut role = Role::Starting;
        loop {
            if self.tx.is_closed() {
                return;
            }
            let wall = chrono::Utc::now().timestamp_millis();
            let action = self.contender.poll(self.now_ms(), wall, listed());
            self.publish(&mut role);
            if let Action::Wait(at) = action {
                let mut until = self.base + Duration::from_millis(at);
                // A leader also wakes when its lease runs out.
                if let Some(valid) = self.contender.valid_until() {
                    until = until.min(self.base + Duration::from_millis(valid));
                }
                tokio::time::sleep_until(until).await;
                continue;
            }
            let outcome =
                match tokio::time::timeout(self.settings.request_timeout, self.perform(&action))
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(_) => Outcome::Failed(format!(
                        "no answer within {:?}",
                        self.settings.request_timeout
                    )),
                };
            if let Outcome::Failed(error) = &outcome {
                tracing::debug!(store = %self.url, ?action, %error, "lease request failed");
            }
            let wall = chrono::Utc::now().timestamp_millis();
            self.contender.done(outcome, self.now_ms(), wall);
            self.publish(&mut role);
        }
    }

    /// Tells the fence where this process stands, and logs a change of role.
    fn publish(&self, role: &mut Role) {
        let c = &self.contender;
        let watched = c.watched();
        let standing = Standing {
            role: c.role(),
            holder: c.holder().to_owned(),
            generation: c.generation(),
            leader: watched.map(|r| r.holder.clone()),
            leader_listed: watched.and_then(|r| r.listed).map(PartId::from),
            last_change: c.last_change().cloned(),
            valid_until: c
                .valid_until()
                .map(|ms| self.base + Duration::from_millis(ms)),
        };
        // A standby that knows of no leader yet (an empty lease folder) is
        // about to lead: not worth a line.
        let known = standing.role != Role::Standby || standing.leader.is_some();
        if standing.role != *role && known {
            let cause = standing.last_change.as_ref().map(|(c, _)| c);
            match standing.role {
                Role::Leader => tracing::warn!(
                    stream = %self.stream, generation = standing.generation, ?cause,
                    "leading the standby group: this process publishes"
                ),
                Role::Standby => tracing::warn!(
                    stream = %self.stream, generation = standing.generation,
                    leader = standing.leader.as_deref().unwrap_or("?"), ?cause,
                    "standing by: another process of the group publishes"
                ),
                Role::Starting => {}
            }
            *role = standing.role;
        }
        self.tx.send_if_modified(|old| {
            let changed = *old != standing;
            *old = standing;
            changed
        });
    }

    async fn perform(&self, action: &Action) -> Outcome {
        match action {
            Action::Discover => match self.discover().await {
                Ok(found) => Outcome::Found(found),
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Action::Read { generation, after } => {
                match self.read(generation + 1, 0).await {
                    Ok(Some(next)) => {
                        return Outcome::Read {
                            next: Some(next),
                            newer: None,
                        };
                    }
                    Ok(None) => {}
                    Err(e) => return Outcome::Failed(e.to_string()),
                }
                // Forward from the last renewal seen, a few at most per read.
                let mut newer = None;
                let first = after.map_or(0, |a| a + 1);
                for renewal in first..first + 8 {
                    match self.read(*generation, renewal).await {
                        Ok(Some(record)) => newer = Some(record),
                        Ok(None) => break,
                        Err(e) => return Outcome::Failed(e.to_string()),
                    }
                }
                Outcome::Read { next: None, newer }
            }
            Action::Create(record) => match self.create(record).await {
                Ok(true) => Outcome::Created,
                Ok(false) => Outcome::Taken,
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Action::Renew(record) => {
                match self.create(record).await {
                    Ok(true) => {}
                    Ok(false) => return Outcome::Taken,
                    Err(e) => return Outcome::Failed(e.to_string()),
                }
                self.forget_renewal(
                    record.generation,
                    record.renewals.checked_sub(KEEP_RENEWALS),
                );
                let next = Path::from(layout::lease_key(&self.stream, record.generation + 1));
                match self.store.head(&next).await {
                    Ok(_) => Outcome::Superseded,
                    Err(object_store::Error::NotFound { .. }) => Outcome::Renewed,
                    Err(e) => Outcome::Failed(e.to_string()),
                }
            }
            Action::Wait(_) => Outcome::Failed("a wait is not performed".into()),
        }
    }

    /// Creates `record`'s object; false if it exists.
    async fn create(&self, record: &LeaseRecord) -> object_store::Result<bool> {
        let key = Path::from(layout::lease_renewal_key(
            &self.stream,
            record.generation,
            record.renewals,
        ));
        match self
            .store
            .put_opts(&key, body(record), PutOptions::from(PutMode::Create))
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes an old renewal, in the background (a failure leaves a small
    /// object behind, nothing more).
    fn forget_renewal(&self, generation: u64, renewal: Option<u64>) {
        let Some(renewal) = renewal.filter(|r| *r > 0) else {
            return;
        };
        let store = Arc::clone(&self.store);
        let key = Path::from(layout::lease_renewal_key(&self.stream, generation, renewal));
        tokio::spawn(async move {
            let _ = store.delete(&key).await;
        });
    }

    /// The newest generation's record: one listing at start.
    async fn discover(&self) -> object_store::Result<Option<LeaseRecord>> {
        newest_lease(self.store.as_ref(), &self.stream).await
    }

    async fn read(
        &self,
        generation: u64,
        renewal: u64,
    ) -> object_store::Result<Option<LeaseRecord>> {
        read_lease(self.store.as_ref(), &self.stream, generation, renewal).await
    }
}

/// The newest lease record of `stream` (a listing of its lease folder and
/// one read), if any: whether a standby group is publishing it, and who
/// leads.
pub async fn newest_lease(
    store: &dyn ObjectStore,
    stream: &str,
) -> object_store::Result<Option<LeaseRecord>> {
    use futures::TryStreamExt;
    let prefix = Path::from(format!("{stream}/{}", layout::LEASE_DIR));
    let newest = store
        .list(Some(&prefix))
        .try_fold(None::<(u64, u64)>, |newest, meta| async move {
            Ok(newest.max(layout::lease_position(stream, meta.location.as_ref())))
        })
        .await?;
    match newest {
        Some((g, n)) => Ok(Some(
            read_lease(store, stream, g, n)
                .await?
                .unwrap_or_else(|| void(g, n)),
        )),
        None => Ok(None),
    }
}

/// Renewal `renewal` of generation `generation`, if it exists; an object
/// that is not that lease record counts as long expired.
async fn read_lease(
    store: &dyn ObjectStore,
    stream: &str,
    generation: u64,
    renewal: u64,
) -> object_store::Result<Option<LeaseRecord>> {
    let key = Path::from(layout::lease_renewal_key(stream, generation, renewal));
    let bytes = match store.get(&key).await {
        Ok(got) => got.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(
        serde_json::from_slice::<LeaseRecord>(&bytes)
            .ok()
            .filter(|r| r.generation == generation && r.renewals == renewal)
            .unwrap_or_else(|| {
                tracing::warn!(
                    generation,
                    renewal,
                    "a lease record that is not one; it counts as expired"
                );
                void(generation, renewal)
            }),
    ))
}

/// A record that counts as long expired.
fn void(generation: u64, renewals: u64) -> LeaseRecord {
    LeaseRecord {
        holder: String::new(),
        generation,
        expires_unix_ms: 0,
        renewals,
        listed: None,
    }
}

/// Renewals a leader keeps in the store behind its newest (older ones are
/// deleted): enough for a standby reading a few behind.
const KEEP_RENEWALS: u64 = 16;

fn body(record: &LeaseRecord) -> PutPayload {
    PutPayload::from(serde_json::to_vec(record).expect("a lease record serialises"))
}
