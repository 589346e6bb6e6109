//! Leader election for a standby group, through the store itself.
//!
//! Several `onair live` processes may broadcast one stream (`--standby-group`):
//! each ingests, mixes, encodes and packages on the stream's wall-clock
//! timeline, so all of them compute the same object names for the same
//! instant, and exactly one, the **leader**, writes to the store. The others
//! are hot standbys: their publish driver holds its backlog as during a store
//! outage (merged, bounded by the window) and forgets what the leader has
//! listed, so a standby that takes over publishes from the first part the old
//! leader did not list, from its own memory.
//!
//! # The lease
//! The lease is a sequence of records, one object per **generation**, at
//! `{stream}/lease/{generation}.json` ([`layout::lease_key`]). A contender
//! becomes leader of generation `g + 1` only by creating that object with a
//! conditional create (`PutMode::Create`: `If-None-Match: *` on S3, an
//! exclusive create on a local folder): of any number of contenders exactly
//! one succeeds, on every store object_store supports.
//!
//! Renewals are objects of their own too, `{stream}/lease/{g}.{n}.json`,
//! created the same way, never overwritten: a renewal that timed out at the
//! leader and lands late cannot replace a newer one and shorten the lease
//! behind the leader's back (an overwritten record could), and one that
//! lands late is simply a record nobody counted. A renewal counts for the
//! leader only when its create was acknowledged within the request timeout.
//! Standbys read forward from the last renewal they saw.
//!
//! Each record carries its holder, its generation, when it expires (wall
//! clock, the holder's send time + the lease duration), its renewal number
//! and the last part the holder has listed (so standbys forget what is
//! stored). The leader renews every part and deletes its old renewals.
//!
//! # Timing (why two leaders never write at once)
//! With `L` the lease duration, `T` the longest a store request may take
//! (the request timeout) and `S` the largest difference between two
//! contenders' wall clocks (the documented skew bound, NTP keeps it to
//! milliseconds):
//! - The leader writes only while its monotonic clock is before `s + L − T`,
//!   `s` being the send time of its last successful renewal (or create):
//!   every operation checks [`Contender::may_write`] first, so a leader that
//!   was paused or cut off and wakes up mid-batch finds its lease gone and
//!   writes nothing more. A request sent just before that instant ends (or
//!   is abandoned) by `s + L`.
//! - A standby takes over only when its wall clock is past the record's
//!   expiry plus `S`, that is after `s + L` in true time.
//!
//! So every write of an old leader ends before the new leader's first. A
//! leader that learns of a newer generation (at a renewal) steps down at
//! once, and a leader whose renewals fail steps down when its time runs
//! out: a store outage ends the leadership of everyone, and whoever creates
//! the next generation when the store is back publishes the span from its
//! own backlog.
//!
//! No flapping: a standby never takes over while the record is fresh, and a
//! healthy leader renews three times per lease.
//!
//! Pure: no clock and no IO. The driver ([`super::standby`]) performs each
//! [`Action`] and reports its [`Outcome`]; tests run contenders against a
//! simulated store in simulated time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hls::PartId;

/// Timing of the lease (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// How long a record stays valid after it was sent: `L`.
    pub duration: Duration,
    /// How often the leader renews (one part).
    pub renew_every: Duration,
    /// How often a standby reads the record.
    pub poll_every: Duration,
    /// The longest a store request may take before it counts as failed: `T`,
    /// also the margin the leader keeps before its lease runs out.
    pub request_timeout: Duration,
    /// The largest wall-clock difference between two contenders: `S`.
    pub max_skew: Duration,
}

impl LeaseSettings {
    /// Settings for parts of `part`: renewal every part, a lease of about
    /// three parts (1 s for 320 ms parts), requests bounded by a quarter of
    /// the lease, standbys reading every 100 ms, a skew bound of 100 ms.
    pub fn for_part(part: Duration) -> Self {
        let duration = Duration::from_millis(1000).max(part * 3);
        Self {
            duration,
            renew_every: part,
            poll_every: Duration::from_millis(100).min(part),
            request_timeout: duration / 4,
            max_skew: Duration::from_millis(100),
        }
    }

    /// Checks that a healthy leader keeps its lease: it must be able to
    /// renew at least twice within `L − T`.
    pub fn validate(&self) -> Result<(), String> {
        let usable = self.duration.saturating_sub(self.request_timeout);
        if self.renew_every.is_zero() || self.poll_every.is_zero() {
            return Err("the renewal and polling periods must be above zero".into());
        }
        if usable < self.renew_every * 2 {
            return Err(format!(
                "a lease of {:?} with requests of up to {:?} leaves less than two renewals \
                 every {:?}",
                self.duration, self.request_timeout, self.renew_every
            ));
        }
        Ok(())
    }
}

/// One generation's lease object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Who holds it: one id per process start.
    pub holder: String,
    /// The generation (also in the object's key).
    pub generation: u64,
    /// Wall clock after which it is void, milliseconds since the Unix epoch.
    pub expires_unix_ms: i64,
    /// Renewals so far.
    pub renewals: u64,
    /// The last part the holder has listed in every rendition, if any.
    #[serde(default)]
    pub listed: Option<Listed>,
}

/// A part as a lease record names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// Media Sequence Number.
    pub msn: u64,
    /// Part index.
    pub part: u32,
}

impl From<PartId> for Listed {
    fn from(id: PartId) -> Self {
        Listed {
            msn: id.msn,
            part: id.part,
        }
    }
}

impl From<Listed> for PartId {
    fn from(l: Listed) -> Self {
        PartId {
            msn: l.msn,
            part: l.part,
        }
    }
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Find the newest generation (a listing of `{stream}/lease/`), then
    /// report [`Outcome::Found`].
    Discover,
    /// Read generation `generation + 1`'s record, and if it does not
    /// exist, `generation`'s renewals after `after` (from its first record
    /// when `None`), up to the newest; report [`Outcome::Read`].
    Read {
        /// The generation known to be newest.
        generation: u64,
        /// The renewal last read.
        after: Option<u64>,
    },
    /// Create the record with a conditional create; report
    /// [`Outcome::Created`], [`Outcome::Taken`] or [`Outcome::Failed`].
    Create(LeaseRecord),
    /// Create the renewal record (its own object, numbered by
    /// [`LeaseRecord::renewals`], with a conditional create), then check
    /// that generation `generation + 1` does not exist; report
    /// [`Outcome::Renewed`], [`Outcome::Taken`] (an earlier attempt at the
    /// same number landed), [`Outcome::Superseded`] or [`Outcome::Failed`].
    Renew(LeaseRecord),
    /// Nothing to do before this monotonic instant (milliseconds).
    Wait(u64),
}

/// What performing an [`Action`] gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The newest record found, if any.
    Found(Option<LeaseRecord>),
    /// A newer generation exists (`next`), or else the known one's newest
    /// renewal after the one asked for (`None`: nothing newer).
    Read {
        /// The record of the next generation, if it exists.
        next: Option<LeaseRecord>,
        /// The known generation's newest renewal, if newer.
        newer: Option<LeaseRecord>,
    },
    /// The conditional create succeeded.
    Created,
    /// The generation was already created by someone.
    Taken,
    /// The renewal was stored and no newer generation exists.
    Renewed,
    /// A newer generation exists.
    Superseded,
    /// The store failed or did not answer within the request timeout.
    Failed(String),
}

/// A contender's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Not yet known: the lease has not been read.
    Starting,
    /// Publishes nothing; takes over when the lease expires.
    Standby,
    /// Holds the lease and publishes.
    Leader,
}

/// Why a contender became leader or stopped being one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// No lease existed: the stream's first leader.
    First,
    /// The previous leader's lease expired unrenewed.
    Expired {
        /// The previous holder.
        previous: String,
    },
    /// The leader could not renew within its lease (store failing, or the
    /// process paused).
    Lapsed,
    /// Another contender created a newer generation.
    Superseded,
}

/// One contender's lease state machine (see the module docs).
#[derive(Debug, Clone)]
pub struct Contender {
    holder: String,
    settings: LeaseSettings,
    /// Newest generation known, and what was last read of it.
    known: Option<(u64, Seen)>,
    /// While leader: the generation, renewals, and until when (monotonic
    /// ms) it may write.
    leading: Option<Leading>,
    /// Monotonic ms of the next action.
    next_at: u64,
    /// The action in flight and its send time (monotonic and wall ms).
    pending: Option<(Action, u64, i64)>,
    last_change: Option<(Change, i64)>,
    discovered: bool,
}

/// What a contender knows of a generation.
#[derive(Debug, Clone)]
enum Seen {
    /// Not read yet.
    Unread,
    /// Its newest renewal known, and when (wall ms) the last read that
    /// found nothing newer was sent; `listed` if that read was a listing
    /// of every record, which alone can confirm an expiry (a read forward
    /// from a renewal may miss newer ones, for example after a deletion).
    Record {
        record: LeaseRecord,
        read_wall: i64,
        listed: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Leading {
    generation: u64,
    renewals: u64,
    valid_until: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Contender {
    /// A contender named `holder` (unique per process start).
    pub fn new(holder: impl Into<String>, settings: LeaseSettings) -> Self {
        Self {
            holder: holder.into(),
            settings,
            known: None,
            leading: None,
            next_at: 0,
            pending: None,
            last_change: None,
            discovered: false,
        }
    }

    /// This contender's holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Its role now.
    pub fn role(&self) -> Role {
        if self.leading.is_some() {
            Role::Leader
        } else if self.discovered {
            Role::Standby
        } else {
            Role::Starting
        }
    }

    /// The newest generation known (held or seen).
    pub fn generation(&self) -> Option<u64> {
        self.leading
            .map(|l| l.generation)
            .or(self.known.as_ref().map(|(g, _)| *g))
    }

    /// The last record read of the newest generation known.
    pub fn watched(&self) -> Option<&LeaseRecord> {
        match &self.known {
            Some((_, Seen::Record { record, .. })) => Some(record),
            _ => None,
        }
    }

    /// The last change of role and when (wall clock ms).
    pub fn last_change(&self) -> Option<&(Change, i64)> {
        self.last_change.as_ref()
    }

    /// Until when (monotonic ms) the leader may write; `None` when not
    /// leader.
    pub fn valid_until(&self) -> Option<u64> {
        self.leading.map(|l| l.valid_until)
    }

    /// Whether a store write may start at monotonic `now_ms`.
    pub fn may_write(&self, now_ms: u64) -> bool {
        self.leading.is_some_and(|l| now_ms < l.valid_until)
    }

    /// The next action at monotonic `now_ms` and wall clock `wall_ms`; the
    /// caller performs it and reports with [`done`](Self::done) (except
    /// [`Action::Wait`]). `listed` is what this process has listed, for the
    /// renewal record.
    pub fn poll(&mut self, now_ms: u64, wall_ms: i64, listed: Option<PartId>) -> Action {
        if let Some((action, _, _)) = &self.pending {
            return action.clone();
        }
        if let Some(l) = self.leading
            && now_ms >= l.valid_until
        {
            self.step_down(Change::Lapsed, wall_ms);
        }
        if now_ms < self.next_at {
            return Action::Wait(self.next_at);
        }
        let skew = ms_i(self.settings.max_skew);
        let action = if !self.discovered {
            Action::Discover
        } else if let Some(l) = self.leading {
            Action::Renew(self.record(l.generation, l.renewals + 1, wall_ms, listed))
        } else {
            match &self.known {
                None => Action::Create(self.record(1, 0, wall_ms, listed)),
                // Expired by a listing sent after expiry + skew: any renewal
                // its holder sent in time had landed before it. An expiry
                // seen by a plain read is confirmed by a listing first.
                Some((
                    g,
                    Seen::Record {
                        record,
                        read_wall,
                        listed: was_listed,
                    },
                )) if *read_wall > record.expires_unix_ms.saturating_add(skew) => {
                    if *was_listed {
                        Action::Create(self.record(g + 1, 0, wall_ms, listed))
                    } else {
                        Action::Discover
                    }
                }
                Some((g, Seen::Record { record, .. })) => Action::Read {
                    generation: *g,
                    after: Some(record.renewals),
                },
                Some((g, Seen::Unread)) => Action::Read {
                    generation: *g,
                    after: None,
                },
            }
        };
        self.pending = Some((action.clone(), now_ms, wall_ms));
        action
    }

    fn record(
        &self,
        generation: u64,
        renewals: u64,
        wall_ms: i64,
        listed: Option<PartId>,
    ) -> LeaseRecord {
        LeaseRecord {
            holder: self.holder.clone(),
            generation,
            expires_unix_ms: wall_ms.saturating_add(ms_i(self.settings.duration)),
            renewals,
            listed: listed.map(Listed::from),
        }
    }

    /// Reports the outcome of the pending action, at monotonic `now_ms`
    /// and wall clock `wall_ms`.
    pub fn done(&mut self, outcome: Outcome, now_ms: u64, wall_ms: i64) {
        let Some((action, sent, sent_wall)) = self.pending.take() else {
            return;
        };
        let s = self.settings;
        match (action, outcome) {
            (Action::Discover, Outcome::Found(found)) => {
                self.discovered = true;
                self.known = found.map(|record| {
                    (
                        record.generation,
                        Seen::Record {
                            record,
                            read_wall: sent_wall,
                            listed: true,
                        },
                    )
                });
                self.next_at = now_ms;
            }
            (Action::Read { generation, .. }, Outcome::Read { next, newer }) => {
                let seen = |record| Seen::Record {
                    record,
                    read_wall: sent_wall,
                    listed: false,
                };
                match (next, newer) {
                    (Some(record), _) => self.known = Some((generation + 1, seen(record))),
                    (None, Some(record)) => self.known = Some((generation, seen(record))),
                    // Nothing newer: the read's time is what counts for
                    // expiry.
                    (None, None) => {
                        if let Some((
                            _,
                            Seen::Record {
                                read_wall, listed, ..
                            },
                        )) = &mut self.known
                        {
                            *read_wall = sent_wall;
                            *listed = false;
                        }
                    }
                }
                self.next_at = now_ms + ms(s.poll_every);
            }
            (Action::Create(record), Outcome::Created) => {
                let cause = match self.watched() {
                    Some(previous) => Change::Expired {
                        previous: previous.holder.clone(),
                    },
                    None => Change::First,
                };
                self.leading = Some(Leading {
                    generation: record.generation,
                    renewals: 0,
                    valid_until: self.valid_from(sent),
                });
                self.known = Some((
                    record.generation,
                    Seen::Record {
                        record,
                        read_wall: sent_wall,
                        listed: false,
                    },
                ));
                self.last_change = Some((cause, wall_ms));
                self.next_at = sent + ms(s.renew_every);
            }
            (Action::Create(record), Outcome::Taken) => {
                self.known = Some((record.generation, Seen::Unread));
                self.next_at = now_ms;
            }
            (Action::Renew(record), Outcome::Renewed) => {
                // Counted only when created within the request timeout: its
                // object existed before the lease it extends ran out, so a
                // standby's read after that sees it.
                let valid = self.valid_from(sent);
                if let Some(l) = &mut self.leading
                    && l.generation == record.generation
                {
                    l.renewals = record.renewals;
                    l.valid_until = l.valid_until.max(valid);
                    self.next_at = sent + ms(s.renew_every);
                    self.known = Some((
                        record.generation,
                        Seen::Record {
                            record,
                            read_wall: sent_wall,
                            listed: false,
                        },
                    ));
                }
            }
            (Action::Renew(record), Outcome::Taken) => {
                // An earlier attempt at this number landed, when is not
                // known: it extends nothing, and the next renewal takes the
                // next number.
                if let Some(l) = &mut self.leading
                    && l.generation == record.generation
                {
                    l.renewals = record.renewals;
                }
                self.next_at = now_ms;
            }
            (Action::Renew(record), Outcome::Superseded) => {
                self.step_down(Change::Superseded, wall_ms);
                self.known = Some((record.generation + 1, Seen::Unread));
                self.next_at = now_ms;
            }
            // A failed renewal keeps the time already won; a failed create
            // (which may have landed) shows in the next read.
            (_, Outcome::Failed(_)) => self.next_at = now_ms + ms(s.poll_every),
            // An outcome that does not answer the action: ask again.
            (_, _) => self.next_at = now_ms,
        }
    }

    /// Monotonic ms until which a lease sent at `sent` lets its holder write.
    fn valid_from(&self, sent: u64) -> u64 {
        sent + ms(self.settings.duration).saturating_sub(ms(self.settings.request_timeout))
    }

    fn step_down(&mut self, why: Change, wall_ms: i64) {
        if let Some(l) = self.leading.take() {
            if self.known.as_ref().is_none_or(|(g, _)| *g <= l.generation) {
                self.known = Some((l.generation, Seen::Unread));
            }
            self.last_change = Some((why, wall_ms));
        }
    }
}

fn ms_i(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The simulations' generator.
    struct Rng(crate::testing::XorShift);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0.next() % n.max(1)
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    fn settings() -> LeaseSettings {
        LeaseSettings::for_part(Duration::from_millis(320))
    }

    /// How the simulated store and processes misbehave.
    #[derive(Clone, Copy)]
    struct Faults {
        /// Percent of requests that fail outright.
        errors: u64,
        /// Percent of requests that are slow: they land up to twice the
        /// request timeout after they were sent, and time out at the client
        /// if later than the timeout.
        slow: u64,
        /// Percent chance per second that a live process pauses (SIGSTOP)
        /// for up to 5 s.
        pauses: u64,
        /// Store outages: (from, to) in ms, every request fails.
        outage: Option<(u64, u64)>,
    }

    struct Proc {
        c: Contender,
        /// Wall clock offset (skew), ms.
        offset: i64,
        alive: bool,
        paused_until: u64,
        /// Response to deliver: (at, outcome).
        response: Option<(u64, Outcome)>,
        /// Last ms at which this process may have had a write in flight.
        last_writable: Option<u64>,
    }

    /// A request that reaches the store at `at`.
    struct Landing {
        at: u64,
        proc: usize,
        action: Action,
        /// The client gives up at `timeout` (reports Failed) if `at` is later.
        timeout: u64,
        fail: bool,
    }

    struct Sim {
        procs: Vec<Proc>,
        /// Records by (generation, renewal).
        store: BTreeMap<(u64, u64), LeaseRecord>,
        landings: Vec<Landing>,
        rng: Rng,
        faults: Faults,
        /// (from, to, proc) leadership spans, by may_write.
        leaders: Vec<(u64, u64, usize)>,
        /// What happened, for failure messages.
        events: Vec<String>,
    }

    impl Sim {
        fn new(n: usize, seed: u64, faults: Faults) -> Sim {
            let mut rng = Rng(crate::testing::XorShift::new(seed));
            let skew = ms_i(settings().max_skew);
            let procs = (0..n)
                .map(|i| Proc {
                    c: Contender::new(format!("p{i}"), settings()),
                    offset: rng.below(skew as u64 + 1) as i64,
                    alive: true,
                    paused_until: 0,
                    response: None,
                    last_writable: None,
                })
                .collect();
            Sim {
                procs,
                store: BTreeMap::new(),
                landings: Vec::new(),
                rng,
                faults,
                leaders: Vec::new(),
                events: Vec::new(),
            }
        }

        fn apply(&mut self, action: &Action) -> Outcome {
            match action {
                Action::Discover => Outcome::Found(self.store.values().next_back().cloned()),
                Action::Read { generation, after } => {
                    if let Some(next) = self.store.get(&(generation + 1, 0)) {
                        return Outcome::Read {
                            next: Some(next.clone()),
                            newer: None,
                        };
                    }
                    let mut k = after.map_or(0, |a| a + 1);
                    let mut newer = None;
                    while let Some(r) = self.store.get(&(*generation, k)) {
                        newer = Some(r.clone());
                        k += 1;
                    }
                    Outcome::Read { next: None, newer }
                }
                Action::Create(r) => match self.store.entry((r.generation, 0)) {
                    std::collections::btree_map::Entry::Occupied(_) => Outcome::Taken,
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(r.clone());
                        Outcome::Created
                    }
                },
                Action::Renew(r) => {
                    if self.store.contains_key(&(r.generation, r.renewals)) {
                        return Outcome::Taken;
                    }
                    self.store.insert((r.generation, r.renewals), r.clone());
                    if self.store.contains_key(&(r.generation + 1, 0)) {
                        Outcome::Superseded
                    } else {
                        Outcome::Renewed
                    }
                }
                Action::Wait(_) => unreachable!("waits never reach the store"),
            }
        }

        fn step(&mut self, t: u64) {
            let timeout = ms(settings().request_timeout);
            // Requests reach the store.
            let mut i = 0;
            while i < self.landings.len() {
                if self.landings[i].at > t {
                    i += 1;
                    continue;
                }
                let l = self.landings.swap_remove(i);
                let outage = self.faults.outage.is_some_and(|(a, b)| (a..b).contains(&t));
                let outcome = if l.fail || outage {
                    Outcome::Failed("simulated".into())
                } else {
                    self.apply(&l.action)
                };
                self.events.push(format!(
                    "{t}: p{} {:?} lands: {outcome:?}",
                    l.proc, l.action
                ));
                let p = &mut self.procs[l.proc];
                if l.at <= l.timeout && p.response.is_none() {
                    p.response = Some((l.at, outcome));
                }
            }
            for (i, p) in self.procs.iter_mut().enumerate() {
                if !p.alive {
                    continue;
                }
                // What the process may write now, by its own rule.
                if p.c.may_write(t) {
                    p.last_writable = Some(t);
                    match self.leaders.iter_mut().rev().find(|l| l.2 == i) {
                        Some(span) if span.1 + 1 == t => span.1 = t,
                        _ => self.leaders.push((t, t, i)),
                    }
                }
                if t < p.paused_until {
                    continue;
                }
                if self.faults.pauses > 0
                    && t.is_multiple_of(1000)
                    && self.rng.chance(self.faults.pauses)
                {
                    p.paused_until = t + 1 + self.rng.below(5000);
                    continue;
                }
                let wall = t as i64 + p.offset;
                if let Some((at, _)) = &p.response
                    && *at <= t
                {
                    let (_, outcome) = p.response.take().expect("a response");
                    self.events.push(format!("{t}: p{i} told {outcome:?}"));
                    p.c.done(outcome, t, wall);
                }
                let pending = p.c.pending.is_some();
                let action = p.c.poll(t, wall, None);
                if pending || matches!(action, Action::Wait(_)) {
                    continue;
                }
                let slow = self.rng.chance(self.faults.slow);
                let latency = if slow {
                    1 + self.rng.below(2 * timeout)
                } else {
                    1 + self.rng.below(20)
                };
                let fail = self.rng.chance(self.faults.errors);
                self.events.push(format!(
                    "{t}: p{i} (wall {wall}) sends {action:?}, latency {latency}"
                ));
                if latency > timeout {
                    p.response = Some((t + timeout, Outcome::Failed("timed out".into())));
                }
                self.landings.push(Landing {
                    at: t + latency,
                    proc: i,
                    action,
                    timeout: t + timeout,
                    fail,
                });
            }
        }

        /// Checks that no two processes may write within one request
        /// timeout of each other: an old leader's last write has landed
        /// before a new leader's first.
        fn check_exclusive(&self) {
            let timeout = ms(settings().request_timeout);
            let mut spans = self.leaders.clone();
            spans.sort();
            for w in spans.windows(2) {
                let (a, b) = (w[0], w[1]);
                if a.2 != b.2 {
                    assert!(
                        a.1 + timeout < b.0,
                        "p{} may write until {} ms and p{} from {} ms; offsets {:?}\n{}",
                        a.2,
                        a.1,
                        b.2,
                        b.0,
                        self.procs.iter().map(|p| p.offset).collect::<Vec<_>>(),
                        self.events
                            .iter()
                            .filter(|e| e
                                .split(':')
                                .next()
                                .and_then(|t| t.parse::<u64>().ok())
                                .is_some_and(|t| t + 1500 >= a.1 && t <= b.0))
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                }
            }
        }

        fn leader(&self) -> Option<usize> {
            self.procs
                .iter()
                .position(|p| p.alive && p.c.role() == Role::Leader)
        }
    }

    const CLEAN: Faults = Faults {
        errors: 0,
        slow: 0,
        pauses: 0,
        outage: None,
    };

    #[test]
    fn the_first_contender_leads_and_the_others_stand_by_without_flapping() {
        for n in [2, 3] {
            let mut sim = Sim::new(n, 7, CLEAN);
            for t in 0..60_000 {
                sim.step(t);
            }
            sim.check_exclusive();
            assert_eq!(sim.leaders.len(), 1, "one leadership for the whole minute");
            let leader = sim.leader().expect("a leader");
            for (i, p) in sim.procs.iter().enumerate() {
                let role = if i == leader {
                    Role::Leader
                } else {
                    Role::Standby
                };
                assert_eq!(p.c.role(), role);
            }
            assert_eq!(
                sim.store.keys().map(|k| k.0).max(),
                Some(1),
                "one generation"
            );
        }
    }

    #[test]
    fn a_killed_leader_is_replaced_within_the_lease_and_skew() {
        for (n, seed) in [(2, 3), (3, 5), (3, 11)] {
            let mut sim = Sim::new(n, seed, CLEAN);
            for t in 0..10_000 {
                sim.step(t);
            }
            let old = sim.leader().expect("a leader");
            let last = sim.leaders.last().expect("a span").1;
            sim.procs[old].alive = false;
            let mut took = None;
            for t in 10_000..20_000 {
                sim.step(t);
                if took.is_none()
                    && let Some(new) = sim.leader()
                {
                    took = Some((t, new));
                }
            }
            let (at, new) = took.expect("a takeover");
            assert_ne!(new, old);
            let s = settings();
            // The record expires L after its last renewal was sent, before
            // the kill; the standby waits the skew bound past it by its own
            // clock (up to the skew bound behind the leader's), then a
            // poll and two requests.
            let _ = last;
            let bound =
                10_000 + ms(s.duration) + 2 * ms(s.max_skew) + ms(s.poll_every) + 2 * 20 + 1;
            assert!(at <= bound, "takeover at {at} ms, bound {bound} ms");
            sim.check_exclusive();
        }
    }

    #[test]
    fn errors_slow_writes_pauses_and_skew_never_make_two_writers() {
        let faults = Faults {
            errors: 10,
            slow: 10,
            pauses: 3,
            outage: Some((30_000, 35_000)),
        };
        for seed in 1..=60 {
            for n in [2, 3] {
                let mut sim = Sim::new(n, seed * 7919, faults);
                for t in 0..90_000 {
                    sim.step(t);
                }
                sim.check_exclusive();
                assert!(
                    sim.leaders.iter().any(|l| l.1 > 36_000),
                    "seed {seed}, {n} contenders: someone leads after the outage; spans {:?}, \
                     store {:?}, states {:?}",
                    sim.leaders,
                    sim.store,
                    sim.procs
                        .iter()
                        .map(|p| format!("{:?} paused until {}", p.c, p.paused_until))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn a_paused_leader_wakes_as_a_standby_and_writes_nothing() {
        let mut sim = Sim::new(2, 13, CLEAN);
        for t in 0..5_000 {
            sim.step(t);
        }
        let old = sim.leader().expect("a leader");
        sim.procs[old].paused_until = 15_000;
        for t in 5_000..30_000 {
            sim.step(t);
        }
        sim.check_exclusive();
        let spans: Vec<_> = sim.leaders.iter().filter(|l| l.2 == old).collect();
        assert_eq!(
            spans.len(),
            1,
            "the old leader never leads again: {spans:?}"
        );
        assert!(spans[0].1 < 5_000 + 1_000);
        assert_eq!(sim.procs[old].c.role(), Role::Standby);
        assert!(matches!(
            sim.procs[old].c.last_change(),
            Some((Change::Lapsed, _))
        ));
        assert_ne!(sim.leader(), Some(old));
    }

    #[test]
    fn a_lone_leader_survives_a_store_outage_by_taking_the_next_generation() {
        let faults = Faults {
            outage: Some((10_000, 20_000)),
            ..CLEAN
        };
        let mut sim = Sim::new(1, 17, faults);
        for t in 0..30_000 {
            sim.step(t);
        }
        assert_eq!(sim.leader(), Some(0));
        assert_eq!(
            sim.store.keys().map(|k| k.0).max(),
            Some(2),
            "generation 2 after the outage"
        );
        let last = sim.leaders.last().expect("a span");
        assert!(last.0 < 21_500, "leads again soon after the store is back");
    }

    #[test]
    fn settings_must_allow_two_renewals_per_lease() {
        assert!(settings().validate().is_ok());
        let tight = LeaseSettings {
            duration: Duration::from_millis(600),
            ..settings()
        };
        assert!(tight.validate().is_err());
    }
}
