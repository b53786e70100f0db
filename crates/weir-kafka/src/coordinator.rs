//! Kafka's classic consumer-group protocol, coordinated here: members join
//! (JoinGroup), the leader assigns partitions with its own assignor (range,
//! roundrobin, cooperative-sticky: the client's business) and hands the
//! assignments back (SyncGroup), members heartbeat, leave or time out, and every
//! change of membership is a rebalance with a new generation.
//!
//! States, as Kafka's: `Empty` (no member), `PreparingRebalance` (waiting for the
//! members to join again, up to the longest rebalance timeout; a member that does
//! not, and whose session runs out, is dropped), `CompletingRebalance` (joined;
//! waiting for the leader's assignments), `Stable`.
//!
//! Groups live in memory: after a restart members find themselves unknown and join
//! again. What lasts is their committed offsets, which are the broker's group
//! offsets (`Vhost::commit_coordinated`). A joining member without an id gets one
//! with `MEMBER_ID_REQUIRED` first (JoinGroup version 4 and later, KIP-394), so a
//! member that never comes back costs nothing past its session timeout. Static
//! members (`group.instance.id`) keep their place across restarts
//! (`static_members.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

/// A group's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    /// Kafka's name for it (ListGroups, DescribeGroups).
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// What a joining member says.
#[derive(Debug)]
pub(crate) struct Join {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// Whether the client takes `MEMBER_ID_REQUIRED` (JoinGroup v4+).
    pub id_required: bool,
    /// Whether the client takes `skip_assignment` (JoinGroup v9+).
    pub may_skip_assignment: bool,
}

/// JoinGroup's answer.
#[derive(Clone, Debug, Default)]
pub(crate) struct Joined {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// For a static leader that came back to a stable group: keep the
    /// assignment, do not run the assignor.
    pub skip_assignment: bool,
}

/// SyncGroup's answer.
#[derive(Clone, Debug, Default)]
pub(crate) struct Synced {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

/// An answer now, or one to wait for.
pub(crate) enum Answer<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// A member as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub(crate) struct MemberView {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as ListGroups and DescribeGroups show it.
#[derive(Clone, Debug)]
pub(crate) struct GroupView {
    pub id: String,
    pub state: State,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    /// Joined in the rebalance under way.
    rejoined: bool,
    join: Option<oneshot::Sender<Joined>>,
    sync: Option<oneshot::Sender<Synced>>,
}

impl Member {
    /// Takes what a join says about the member (its id and instance aside).
    fn joined_with(&mut self, join: &mut Join, now: Instant) {
        self.client_id = std::mem::take(&mut join.client_id);
        self.client_host = std::mem::take(&mut join.client_host);
        self.session_timeout = join.session_timeout;
        self.rebalance_timeout = join.rebalance_timeout;
        self.protocols = std::mem::take(&mut join.protocols);
        self.last_seen = now;
    }
}

struct Group {
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Ids handed out with `MEMBER_ID_REQUIRED`, until when they may join.
    pending: HashMap<String, Instant>,
    /// When a rebalance under way stops waiting for members.
    deadline: Instant,
}

impl Group {
    fn new(now: Instant) -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            deadline: now,
        }
    }
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// Most groups held, and most members (joined, or given an id to join with) in
/// one group: `[kafka] max_groups` and `max_group_members`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub groups: usize,
    pub members: usize,
}

impl Default for Limits {
    /// The configuration's defaults.
    fn default() -> Self {
        let config = crate::config::KafkaConfig::default();
        Limits {
            groups: config.max_groups,
            members: config.max_group_members,
        }
    }
}

/// Every Kafka group of the front end.
#[derive(Default)]
pub(crate) struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    next_id: std::sync::atomic::AtomicU64,
    limits: Limits,
}

impl Coordinator {
    pub(crate) fn new(limits: Limits) -> Coordinator {
        Coordinator {
            limits,
            ..Coordinator::default()
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Group>) -> T) -> T {
        let mut groups = self
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut groups)
    }

    /// JoinGroup.
    pub(crate) fn join(&self, mut join: Join, now: Instant) -> Answer<Joined> {
        let refuse = |error: ResponseError, member_id: &str| {
            Answer::Now(Joined {
                error: error.code(),
                generation: -1,
                member_id: member_id.to_owned(),
                ..Joined::default()
            })
        };
        if join.protocols.is_empty() || join.protocol_type.is_empty() {
            return refuse(ResponseError::InconsistentGroupProtocol, &join.member_id);
        }
        let serial = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let limits = self.limits;
        self.with(|groups| {
            // A new group past the cap: clients ask again later, as when a
            // coordinator moves.
            if groups.len() >= limits.groups && !groups.contains_key(&join.group) {
                return refuse(ResponseError::CoordinatorNotAvailable, &join.member_id);
            }
            let g = groups
                .entry(join.group.clone())
                .or_insert_with(|| Group::new(now));
            if !g.members.is_empty() && !compatible(g, &join) {
                return refuse(ResponseError::InconsistentGroupProtocol, &join.member_id);
            }
            let mut member_id = join.member_id.clone();
            let fresh_id = || {
                format!(
                    "{}-{serial:016x}{:08x}",
                    join.client_id,
                    now.elapsed().subsec_nanos() ^ serial as u32
                )
            };
            if let Some(holder) = join.instance_id.as_deref().and_then(|i| holder(g, i)) {
                if member_id.is_empty() {
                    let new_id = fresh_id();
                    return rejoin_static(g, holder, new_id, join, now);
                }
                if holder != member_id {
                    return refuse(ResponseError::FencedInstanceId, &member_id);
                }
            }
            if member_id.is_empty() {
                if g.members.len() + g.pending.len() >= limits.members {
                    return refuse(ResponseError::GroupMaxSizeReached, "");
                }
                member_id = fresh_id();
                // A static member joins at once (Kafka asks only dynamic ones to
                // come back with the id).
                if join.id_required && join.instance_id.is_none() {
                    g.pending
                        .insert(member_id.clone(), now + join.session_timeout);
                    return refuse(ResponseError::MemberIdRequired, &member_id);
                }
            } else if !g.members.contains_key(&member_id) && g.pending.remove(&member_id).is_none()
            {
                return refuse(ResponseError::UnknownMemberId, &member_id);
            }
            if let Some(answer) = join_again(g, &member_id, &join.protocols, now) {
                return Answer::Now(answer);
            }
            let (tx, rx) = oneshot::channel();
            let member = g
                .members
                .entry(member_id.clone())
                .or_insert_with(|| Member {
                    instance_id: None,
                    client_id: String::new(),
                    client_host: String::new(),
                    session_timeout: join.session_timeout,
                    rebalance_timeout: join.rebalance_timeout,
                    protocols: Vec::new(),
                    assignment: Bytes::new(),
                    last_seen: now,
                    rejoined: false,
                    join: None,
                    sync: None,
                });
            member.instance_id = join.instance_id.take();
            member.joined_with(&mut join, now);
            member.rejoined = true;
            member.join = Some(tx);
            g.protocol_type = Some(join.protocol_type);
            if g.state != State::PreparingRebalance {
                start_rebalance(g, now, Some(&member_id));
            }
            if g.members.values().all(|m| m.rejoined) {
                complete_join(g, now);
            }
            Answer::Later(rx)
        })
    }

    /// SyncGroup; the leader's `assignments` settle the generation.
    pub(crate) fn sync(
        &self,
        group: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Answer<Synced> {
        let refuse = |error: ResponseError| {
            Answer::Now(Synced {
                error: error.code(),
                ..Synced::default()
            })
        };
        self.with(|groups| {
            let Some(g) = groups.get_mut(group) else {
                return refuse(ResponseError::UnknownMemberId);
            };
            if fenced(g, member_id, instance) {
                return refuse(ResponseError::FencedInstanceId);
            }
            let Some(member) = g.members.get_mut(member_id) else {
                return refuse(ResponseError::UnknownMemberId);
            };
            member.last_seen = now;
            if generation != g.generation {
                return refuse(ResponseError::IllegalGeneration);
            }
            match g.state {
                State::Empty | State::PreparingRebalance => {
                    refuse(ResponseError::RebalanceInProgress)
                }
                State::Stable => Answer::Now(synced(g, member_id)),
                State::CompletingRebalance => {
                    if g.leader.as_deref() == Some(member_id) {
                        let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                        for (id, m) in &mut g.members {
                            m.assignment = given.remove(id).unwrap_or_default();
                        }
                        g.state = State::Stable;
                        let ids: Vec<String> = g.members.keys().cloned().collect();
                        for id in ids {
                            let answer = synced(g, &id);
                            if let Some(tx) = g.members.get_mut(&id).and_then(|m| m.sync.take()) {
                                let _ = tx.send(answer);
                            }
                        }
                        Answer::Now(synced(g, member_id))
                    } else {
                        let (tx, rx) = oneshot::channel();
                        member.sync = Some(tx);
                        Answer::Later(rx)
                    }
                }
            }
        })
    }

    /// Heartbeat.
    pub(crate) fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> i16 {
        self.with(|groups| {
            let Some(g) = groups.get_mut(group) else {
                return code(ResponseError::UnknownMemberId);
            };
            if fenced(g, member_id, instance) {
                return code(ResponseError::FencedInstanceId);
            }
            let Some(member) = g.members.get_mut(member_id) else {
                return code(ResponseError::UnknownMemberId);
            };
            member.last_seen = now;
            if generation != g.generation {
                return code(ResponseError::IllegalGeneration);
            }
            if g.state == State::PreparingRebalance {
                return code(ResponseError::RebalanceInProgress);
            }
            0
        })
    }

    /// LeaveGroup: each member's error. A member is named by its id, its
    /// instance id (static membership), or both.
    pub(crate) fn leave(
        &self,
        group: &str,
        members: &[(String, Option<String>)],
        now: Instant,
    ) -> Vec<i16> {
        self.with(|groups| {
            let Some(g) = groups.get_mut(group) else {
                return vec![code(ResponseError::UnknownMemberId); members.len()];
            };
            let mut out = Vec::with_capacity(members.len());
            let mut left = false;
            for (id, instance) in members {
                let id = match instance.as_deref().map(|i| holder(g, i)) {
                    None => id.clone(),
                    Some(None) => {
                        out.push(code(ResponseError::UnknownMemberId));
                        continue;
                    }
                    Some(Some(holder)) if id.is_empty() || *id == holder => holder,
                    Some(Some(_)) => {
                        out.push(code(ResponseError::FencedInstanceId));
                        continue;
                    }
                };
                if let Some(m) = g.members.remove(&id) {
                    drop(m.join);
                    left = true;
                    out.push(0);
                } else {
                    out.push(code(ResponseError::UnknownMemberId));
                }
            }
            if left {
                members_changed(g, now);
            }
            out
        })
    }

    /// Whether `member_id` of `generation` may commit offsets for `group` now: 0,
    /// or the error. Generation -1 with no member id is a commit from outside any
    /// generation (a consumer that assigns its own partitions), allowed while the
    /// group has no member.
    pub(crate) fn may_commit(
        &self,
        group: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> i16 {
        self.with(|groups| {
            let Some(g) = groups.get_mut(group) else {
                return if generation < 0 {
                    0
                } else {
                    code(ResponseError::IllegalGeneration)
                };
            };
            if fenced(g, member_id, instance) {
                return code(ResponseError::FencedInstanceId);
            }
            if generation < 0 && member_id.is_empty() {
                return if g.members.is_empty() {
                    0
                } else {
                    code(ResponseError::UnknownMemberId)
                };
            }
            let Some(member) = g.members.get_mut(member_id) else {
                return code(ResponseError::UnknownMemberId);
            };
            member.last_seen = now;
            if generation != g.generation {
                return code(ResponseError::IllegalGeneration);
            }
            // As Kafka's coordinator: a member of the current generation may
            // commit while the group prepares a rebalance (consumers commit what
            // they processed before giving their partitions up), not between the
            // joins and the leader's assignment.
            if g.state == State::CompletingRebalance {
                return code(ResponseError::RebalanceInProgress);
            }
            0
        })
    }

    /// Whether `member_id` claims static `instance` that another member holds now.
    #[cfg(test)]
    pub(crate) fn fenced(&self, group: &str, member_id: &str, instance: Option<&str>) -> bool {
        self.with(|groups| {
            groups
                .get(group)
                .is_some_and(|g| fenced(g, member_id, instance))
        })
    }

    /// DeleteGroups' first step: forgets `group` unless it has members; whether
    /// it had (`NON_EMPTY_GROUP` then).
    pub(crate) fn forget_unless_active(&self, group: &str) -> bool {
        self.with(|groups| {
            if groups.get(group).is_some_and(|g| !g.members.is_empty()) {
                return true;
            }
            groups.remove(group);
            false
        })
    }

    /// Drops members whose session ran out and ends rebalances past their
    /// deadline; called often (a few times a second).
    pub(crate) fn tick(&self, now: Instant) {
        self.with(|groups| {
            for g in groups.values_mut() {
                g.pending.retain(|_, until| *until > now);
                let preparing = g.state == State::PreparingRebalance;
                let expired: Vec<String> = g
                    .members
                    .iter()
                    .filter(|(_, m)| {
                        !(preparing && m.rejoined) && m.last_seen + m.session_timeout <= now
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &expired {
                    tracing::info!(group = %id, "a Kafka group member's session expired");
                    g.members.remove(id);
                }
                if !expired.is_empty() {
                    members_changed(g, now);
                } else if g.state == State::PreparingRebalance && now >= g.deadline {
                    g.members.retain(|_, m| m.rejoined);
                    complete_join(g, now);
                }
            }
            groups.retain(|_, g| {
                !(g.state == State::Empty && g.members.is_empty() && g.pending.is_empty())
            });
        });
    }

    /// Every group, or those named.
    pub(crate) fn views(&self, names: Option<&[String]>) -> Vec<GroupView> {
        self.with(|groups| {
            groups
                .iter()
                .filter(|(id, _)| names.is_none_or(|n| n.contains(id)))
                .map(|(id, g)| GroupView {
                    id: id.clone(),
                    state: g.state,
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    protocol: g.protocol.clone().unwrap_or_default(),
                    members: g
                        .members
                        .iter()
                        .map(|(mid, m)| MemberView {
                            id: mid.clone(),
                            instance_id: m.instance_id.clone(),
                            client_id: m.client_id.clone(),
                            client_host: m.client_host.clone(),
                            metadata: g
                                .protocol
                                .as_ref()
                                .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                                .map(|(_, md)| md.clone())
                                .unwrap_or_default(),
                            assignment: m.assignment.clone(),
                        })
                        .collect(),
                })
                .collect()
        })
    }
}

/// Whether a joining member's protocols fit the group's.
fn compatible(g: &Group, join: &Join) -> bool {
    if g.protocol_type.as_deref() != Some(join.protocol_type.as_str()) {
        return false;
    }
    // At least one protocol every other member supports too.
    join.protocols.iter().any(|(name, _)| {
        g.members
            .values()
            .filter(|m| !m.protocols.is_empty())
            .all(|m| m.protocols.iter().any(|(n, _)| n == name))
    })
}

/// Membership changed outside a join: a rebalance, or `Empty` without members.
fn members_changed(g: &mut Group, now: Instant) {
    if g.leader
        .as_ref()
        .is_some_and(|l| !g.members.contains_key(l))
    {
        g.leader = None;
    }
    if g.members.is_empty() {
        g.state = State::Empty;
        g.generation += 1;
        g.protocol = None;
        return;
    }
    if g.state == State::PreparingRebalance {
        if g.members.values().all(|m| m.rejoined) {
            complete_join(g, now);
        }
        return;
    }
    start_rebalance(g, now, None);
}

/// Starts a rebalance: everyone must join again (`joined` just did).
fn start_rebalance(g: &mut Group, now: Instant, joined: Option<&str>) {
    tracing::info!(
        generation = g.generation,
        member = joined.unwrap_or("(none: one left)"),
        "a Kafka group rebalances"
    );
    g.state = State::PreparingRebalance;
    let longest = g
        .members
        .values()
        .map(|m| m.rebalance_timeout)
        .max()
        .unwrap_or_default();
    g.deadline = now + longest;
    for (id, m) in &mut g.members {
        m.rejoined = Some(id.as_str()) == joined;
        // Members waiting for their assignment learn they must join again.
        if let Some(tx) = m.sync.take() {
            let _ = tx.send(Synced {
                error: code(ResponseError::RebalanceInProgress),
                ..Synced::default()
            });
        }
    }
}

/// A member of the generation joins again with the protocols it joined with:
/// as Kafka's coordinator, no rebalance when the group is stable and it is not the
/// leader (whose join is how a leader asks for one), and the same answer again
/// while the leader's assignment is awaited (a join whose answer was lost). `None`:
/// the join starts or joins a rebalance.
fn join_again(
    g: &mut Group,
    member_id: &str,
    protocols: &[(String, Bytes)],
    now: Instant,
) -> Option<Joined> {
    let leader = g.leader.clone().unwrap_or_default();
    let again = match g.state {
        State::Stable => leader != member_id,
        State::CompletingRebalance => true,
        State::Empty | State::PreparingRebalance => false,
    };
    let m = g.members.get_mut(member_id)?;
    if !again || m.protocols != protocols {
        return None;
    }
    m.last_seen = now;
    let members = if leader == member_id {
        member_list(g)
    } else {
        Vec::new()
    };
    Some(Joined {
        error: 0,
        generation: g.generation,
        protocol_type: g.protocol_type.clone(),
        protocol: g.protocol.clone(),
        leader,
        member_id: member_id.to_owned(),
        members,
        skip_assignment: false,
    })
}

/// Every member joined (or the rebalance timed out): a new generation.
fn complete_join(g: &mut Group, now: Instant) {
    if g.members.is_empty() {
        g.state = State::Empty;
        g.generation += 1;
        return;
    }
    g.generation += 1;
    // The protocol every member supports, in the order of the leader's preference.
    if g.leader.as_ref().is_none_or(|l| !g.members.contains_key(l)) {
        g.leader = g.members.keys().next().cloned();
    }
    let leader = g.leader.clone().unwrap_or_default();
    g.protocol = select_protocol(g);
    g.state = State::CompletingRebalance;
    tracing::info!(
        generation = g.generation,
        members = g.members.len(),
        protocol = g.protocol.as_deref().unwrap_or(""),
        "a Kafka group completed a join"
    );
    let everyone = member_list(g);
    for (id, m) in &mut g.members {
        m.rejoined = false;
        // Sessions run from the answer: a join may have waited long for the others.
        m.last_seen = now;
        if let Some(tx) = m.join.take() {
            let _ = tx.send(Joined {
                error: 0,
                generation: g.generation,
                protocol_type: g.protocol_type.clone(),
                protocol: g.protocol.clone(),
                leader: leader.clone(),
                member_id: id.clone(),
                members: if *id == leader {
                    everyone.clone()
                } else {
                    Vec::new()
                },
                skip_assignment: false,
            });
        }
    }
}

/// The protocol every member supports, in the order of the leader's preference.
fn select_protocol(g: &Group) -> Option<String> {
    let leader = g.members.get(g.leader.as_ref()?)?;
    leader
        .protocols
        .iter()
        .map(|(n, _)| n)
        .find(|n| {
            g.members
                .values()
                .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
        })
        .cloned()
}

/// Every member with its metadata for the group's protocol: the leader's list.
fn member_list(g: &Group) -> Vec<(String, Option<String>, Bytes)> {
    g.members
        .iter()
        .map(|(id, m)| {
            let metadata = m
                .protocols
                .iter()
                .find(|(n, _)| Some(n) == g.protocol.as_ref())
                .map(|(_, md)| md.clone())
                .unwrap_or_default();
            (id.clone(), m.instance_id.clone(), metadata)
        })
        .collect()
}

fn synced(g: &Group, member_id: &str) -> Synced {
    Synced {
        error: 0,
        protocol_type: g.protocol_type.clone(),
        protocol: g.protocol.clone(),
        assignment: g
            .members
            .get(member_id)
            .map(|m| m.assignment.clone())
            .unwrap_or_default(),
    }
}

#[path = "static_members.rs"]
mod static_members;
use static_members::{fenced, holder, rejoin_static};

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
