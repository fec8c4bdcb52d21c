//! One batch of an RPC, in named phases: [`collect`] the messages that parse,
//! [`Inner::gate`] them (remembered denials, admission, events held until
//! the tenant's gate is ready), [`Inner::load_position`] and
//! [`Inner::load_digests`] from the store, [`decide`] each message (pure),
//! [`Inner::commit`] the new ones in one durable append, then ack.

use super::*;

impl Inner {
    /// Handles one batch. Returns the acks to send, and the status to end the
    /// RPC with if a message was refused (its acks are for the messages before it).
    pub(super) async fn batch(
        self: &Arc<Self>,
        rpc: &mut Rpc,
        msgs: Vec<PublishBuildToolEventStreamRequest>,
    ) -> (Vec<PublishBuildToolEventStreamResponse>, Option<Status>) {
        let (mut parsed, mut refusal) = collect(rpc, msgs);
        let Some(id) = rpc.invocation_id.clone() else {
            return (Vec::new(), refusal);
        };
        if parsed.is_empty() {
            return (Vec::new(), refusal);
        }
        let slot = self.slot(&id);
        let mut guard = slot.lock().await;
        let prechecked = match self.gate(rpc, &id, &mut guard, &mut parsed).await {
            Gate::Pass { prechecked } => prechecked,
            Gate::Held => return (Vec::new(), refusal),
            Gate::Refused(status) => return (Vec::new(), Some(status)),
        };
        let (start_pos, unfinalized) = match self.load_position(rpc, &guard, &id).await {
            Ok(p) => p,
            Err(status) => return (Vec::new(), Some(status)),
        };
        if let Err(status) = self.load_digests(&mut guard, &parsed, start_pos, &id).await {
            return (Vec::new(), Some(status));
        }
        let mut d = decide(
            &id,
            &parsed,
            start_pos,
            prechecked,
            &mut rpc.seq,
            rpc.admitted.as_deref_mut(),
            |seq| guard.digests.get(&seq).copied(),
            |p| digest(&self.hasher, p.kind, &p.payload),
        );
        Metrics::add(&self.metrics.events_duplicate, d.duplicates);
        if d.sequence_error {
            Metrics::add(&self.metrics.stream_errors_sequence, 1);
        }
        if d.refusal.is_some() {
            refusal = d.refusal.take();
        }
        let records = new_records(&parsed, &d.acks, start_pos);
        let mut denial = d.denial.take();
        if denial.is_none() && !records.is_empty() {
            let add: u64 = records.iter().map(|r| r.payload.len() as u64).sum();
            if let Some(gate) = rpc.admitted.as_mut() {
                if let Err(r) = gate.check_bytes(rpc.bytes.saturating_add(add)) {
                    denial = Some(r);
                }
            }
        }
        if let Some(r) = denial {
            // Deleted while this RPC holds the invocation's slot: no other
            // RPC of it can append in between.
            let status = self
                .discard(&id, rpc.principal.clone(), r, rpc.deletable())
                .await;
            guard.reset();
            drop(guard);
            return (Vec::new(), Some(status));
        }
        let mut finished_now = false;
        if !records.is_empty() {
            match self
                .commit(rpc, &id, &parsed, &d, records, &mut guard)
                .await
            {
                Ok(finished) => finished_now = finished,
                Err((acks, status)) => return (acks, Some(status)),
            }
        }
        guard.pos = Some(d.pos);
        drop(guard);
        if finished_now || unfinalized {
            self.spawn_finalize(id);
        }
        (d.acks.iter().map(|&i| ack(&parsed[i])).collect(), refusal)
    }

    /// Remembered denials, admission of the RPC, and a gate that is not ready
    /// yet (a tenant's stream before its canonical command line): every new
    /// event is checked now and held, unstored and unacked, until the gate is
    /// ready; refused if it never gets ready. When the gate opens, `parsed`
    /// becomes the held events followed by this batch's.
    async fn gate(
        &self,
        rpc: &mut Rpc,
        id: &str,
        guard: &mut Slot,
        parsed: &mut Vec<Parsed>,
    ) -> Gate {
        // A denied and deleted invocation: every later batch, on this RPC or
        // a retry, gets the same denial and stores nothing.
        let remembered = self
            .denied
            .lock()
            .expect("denied lock")
            .by_id
            .get(id)
            .filter(|(who, _)| *who == rpc.principal)
            .map(|(_, r)| r.clone());
        if let Some(r) = remembered {
            self.metrics.denied(r.reason);
            return Gate::Refused(r.status);
        }
        if rpc.admitted.is_none() {
            if let Err(status) = self.admit_rpc(rpc, id).await {
                return Gate::Refused(status);
            }
        }
        if rpc.held.is_empty() && rpc.admitted.as_ref().is_none_or(|g| g.ready()) {
            return Gate::Pass { prechecked: 0 };
        }
        let gate = rpc.admitted.as_mut().expect("admitted above");
        for p in parsed.iter() {
            if p.probe.is_some() {
                if let Err(r) = gate.check_event(&p.payload) {
                    rpc.held.clear();
                    let status = self
                        .discard(id, rpc.principal.clone(), r, rpc.deletable())
                        .await;
                    guard.reset();
                    return Gate::Refused(status);
                }
            }
        }
        rpc.held_bytes += parsed.iter().map(|p| p.payload.len()).sum::<usize>();
        rpc.held.append(parsed);
        if !gate.ready() {
            let finished = rpc
                .held
                .iter()
                .any(|p| p.kind == RecordKind::StreamFinished);
            if finished || rpc.held.len() > HOLD_MAX_EVENTS || rpc.held_bytes > HOLD_MAX_BYTES {
                let r = gate.not_ready(rpc.held.len(), finished);
                rpc.held.clear();
                let status = self
                    .discard(id, rpc.principal.clone(), r, rpc.deletable())
                    .await;
                guard.reset();
                return Gate::Refused(status);
            }
            return Gate::Held;
        }
        *parsed = std::mem::take(&mut rpc.held);
        rpc.held_bytes = 0;
        Gate::Pass {
            prechecked: parsed.len(),
        }
    }

    /// The invocation's stored position: this process's cached one, except on
    /// an RPC's first batch (another replica may have moved it since). The
    /// flag says the finish is stored but finalizing never ran (the server
    /// died in between): the re-sent events of the retry trigger it.
    async fn load_position(
        &self,
        rpc: &mut Rpc,
        guard: &Slot,
        id: &str,
    ) -> Result<(Position, bool), Status> {
        let cached = if rpc.fresh { None } else { guard.pos };
        rpc.fresh = false;
        if let Some(p) = cached {
            return Ok((p, false));
        }
        let sid = id.to_string();
        match self.blocking(move |s| s.state(&sid)).await {
            Ok(Some(st)) => Ok((
                Position {
                    accepted: st.last_seq,
                    finished_at: st.saw_stream_finished.then_some(st.last_seq),
                },
                st.saw_stream_finished && !st.finalized,
            )),
            Ok(None) => Ok((Position::default(), false)),
            Err(e) => Err(store_status(e)),
        }
    }

    /// Re-sent events are compared with what was stored: digests of the
    /// recent window, else read back from the journal once.
    async fn load_digests(
        &self,
        guard: &mut Slot,
        parsed: &[Parsed],
        pos: Position,
        id: &str,
    ) -> Result<(), Status> {
        let missing = parsed
            .iter()
            .filter(|p| (1..=pos.accepted).contains(&p.seq))
            .filter(|p| !guard.digests.contains_key(&p.seq))
            .map(|p| p.seq)
            .min();
        let Some(from) = missing else {
            return Ok(());
        };
        let (sid, h, upto) = (id.to_string(), self.hasher.clone(), pos.accepted);
        let loaded = self
            .blocking(move |s| {
                let mut m = std::collections::BTreeMap::new();
                for r in s.read(&sid)? {
                    let r = r?;
                    if (from..=upto).contains(&r.seq) {
                        m.insert(r.seq, digest(&h, r.kind, &r.payload));
                    }
                }
                Ok(m)
            })
            .await;
        match loaded {
            Ok(m) => {
                guard.digests.extend(m);
                Ok(())
            }
            Err(e) => Err(store_status(e)),
        }
    }

    /// Appends the batch's new events in one durable write, the owner checked
    /// by the store; returns whether the stream's finish was among them. On
    /// a failure: the acks still due (the re-sent events before the first new
    /// one) and the status to end the RPC with.
    async fn commit(
        &self,
        rpc: &mut Rpc,
        id: &str,
        parsed: &[Parsed],
        d: &Decided,
        records: Vec<JournalRecord>,
        guard: &mut Slot,
    ) -> Result<bool, (Vec<PublishBuildToolEventStreamResponse>, Status)> {
        let flags: AppendFlags = batch_flags(
            records
                .iter()
                .zip(d.acks.iter())
                .filter_map(|(_, &i)| parsed[i].probe.as_ref()),
            records.iter().any(|r| r.kind == RecordKind::StreamFinished),
        );
        let finished = flags.saw_stream_finished;
        let n_bep = records
            .iter()
            .filter(|r| r.kind == RecordKind::BepEvent)
            .count() as u64;
        // The owner is checked by the store on every append, under the
        // invocation's lock: whatever admission saw, a stream never adds to
        // (or creates over) another tenant's invocation.
        let meta = InvocationMeta {
            invocation_id: id.to_string(),
            build_id: Some(parsed[0].stream_id.build_id.clone()).filter(|b| !b.is_empty()),
            source: InvocationSource::Bes,
            tenant: rpc.tenant().map(str::to_string),
            instance: Some(rpc.project_id.clone()).filter(|p| !p.is_empty()),
            created_at_ms: now_ms(),
        };
        let new_digests: Vec<(u64, u64)> = records
            .iter()
            .map(|r| (r.seq, digest(&self.hasher, r.kind, &r.payload)))
            .collect();
        let t0 = Instant::now();
        let res = self
            .blocking(move |s| s.append_as(&meta, &records, flags))
            .await;
        Metrics::add(&self.metrics.store_commits, 1);
        Metrics::add(
            &self.metrics.store_commit_micros,
            t0.elapsed().as_micros() as u64,
        );
        match res {
            Ok(st) => {
                rpc.bytes = st.bytes;
                rpc.may_delete = true;
            }
            Err(StoreError::TenantMismatch { .. }) => {
                guard.reset();
                let r = match rpc.admitted.as_ref() {
                    Some(gate) => gate.not_owner(id),
                    None => OpenAdmitted.not_owner(id),
                };
                self.metrics.denied(r.reason);
                return Err((Vec::new(), r.status));
            }
            Err(e) => {
                Metrics::add(&self.metrics.stream_errors_store, 1);
                guard.reset(); // reload from the store next time
                let first_new = d.new_from.unwrap_or(d.acks.len());
                let acks = d
                    .acks
                    .iter()
                    .take_while(|&&i| i < first_new)
                    .map(|&i| ack(&parsed[i]))
                    .collect();
                return Err((acks, store_status(e)));
            }
        }
        Metrics::add(&self.metrics.events_ingested, n_bep);
        guard.digests.extend(new_digests);
        while guard.digests.len() > DIGEST_WINDOW {
            guard.digests.pop_first();
        }
        self.activity
            .lock()
            .expect("activity lock")
            .insert(id.to_string(), Instant::now());
        Ok(finished)
    }
}

/// What [`Inner::gate`] let through.
enum Gate {
    /// Decide these messages; the first `prechecked` were already checked
    /// by the gate while held.
    Pass { prechecked: usize },
    /// Held, unstored and unacked, until the gate is ready.
    Held,
    /// End the RPC with this status.
    Refused(Status),
}

/// Parses the batch's messages, one invocation per RPC; stops at the first
/// message refused, whose status is returned with the messages before it.
fn collect(
    rpc: &mut Rpc,
    msgs: Vec<PublishBuildToolEventStreamRequest>,
) -> (Vec<Parsed>, Option<Status>) {
    let mut parsed = Vec::with_capacity(msgs.len());
    for m in msgs {
        if rpc.project_id.is_empty() && !m.project_id.is_empty() {
            rpc.project_id.clone_from(&m.project_id);
        }
        let p = match parse(m) {
            Ok(p) => p,
            Err(s) => return (parsed, Some(s)),
        };
        let id = &p.stream_id.invocation_id;
        match &rpc.invocation_id {
            None => rpc.invocation_id = Some(id.clone()),
            Some(known) if known != id => {
                let status = invalid(format!(
                    "one RPC carries two invocations ({known} and {id}); open one stream per invocation"
                ));
                return (parsed, Some(status));
            }
            Some(_) => {}
        }
        parsed.push(p);
    }
    (parsed, None)
}

/// What [`decide`] made of a batch.
pub(super) struct Decided {
    /// Indexes of the messages to ack, in order.
    pub(super) acks: Vec<usize>,
    /// Index of the first new (appended) message.
    pub(super) new_from: Option<usize>,
    /// The position after the batch.
    pub(super) pos: Position,
    /// The status that stopped the batch (its acks are for the messages before it).
    pub(super) refusal: Option<Status>,
    /// Admission refused an event: the whole invocation is discarded.
    pub(super) denial: Option<Refusal>,
    /// Re-sent events that matched what was stored.
    pub(super) duplicates: u64,
    /// The batch stopped on a sequence error (out of order, or a re-sent
    /// event with other bytes).
    pub(super) sequence_error: bool,
}

/// Decides every message of a batch, without I/O: the sequence rules, a
/// re-sent event byte-identical to the stored one (by `stored`/`hash`
/// digests), event 1 is the stream's BuildStarted and no later event is a
/// BuildStarted, and the gate's check of each new event not `prechecked`.
/// Stops at the first refusal.
#[allow(clippy::too_many_arguments)]
pub(super) fn decide(
    id: &str,
    parsed: &[Parsed],
    start: Position,
    prechecked: usize,
    seq: &mut RpcSequencer,
    mut gate: Option<&mut (dyn Admitted + '_)>,
    stored: impl Fn(u64) -> Option<u64>,
    hash: impl Fn(&Parsed) -> u64,
) -> Decided {
    let mut d = Decided {
        acks: Vec::with_capacity(parsed.len()),
        new_from: None,
        pos: start,
        refusal: None,
        denial: None,
        duplicates: 0,
        sequence_error: false,
    };
    for (i, p) in parsed.iter().enumerate() {
        match seq.decide(d.pos, p.seq) {
            Decision::Duplicate => {
                if stored(p.seq) != Some(hash(p)) {
                    d.sequence_error = true;
                    d.refusal = Some(Status::failed_precondition(format!(
                        "invocation {id}: event {} was already stored with different bytes; \
                         a re-sent event must be byte-identical to the one acked",
                        p.seq
                    )));
                    break;
                }
                d.duplicates += 1;
                d.acks.push(i);
            }
            Decision::Append => {
                if let Err(status) = started_rule(id, p) {
                    d.refusal = Some(status);
                    break;
                }
                if let (Some(gate), Some(_), true) =
                    (gate.as_mut(), p.probe.as_ref(), i >= prechecked)
                {
                    if let Err(r) = gate.check_event(&p.payload) {
                        d.denial = Some(r);
                        break;
                    }
                }
                d.new_from.get_or_insert(i);
                d.pos.accepted = p.seq;
                if p.kind == RecordKind::StreamFinished {
                    d.pos.finished_at = Some(p.seq);
                }
                d.acks.push(i);
            }
            Decision::Reject(v) => {
                d.sequence_error = true;
                d.refusal = Some(Status::failed_precondition(format!("invocation {id}: {v}")));
                break;
            }
        }
    }
    d
}

/// Event 1 is BuildStarted with the stream's invocation id; no later event
/// is a BuildStarted (the evidence takes its id from BuildStarted: a second
/// one could name another invocation, and its proof file).
fn started_rule(id: &str, p: &Parsed) -> Result<(), Status> {
    let started = p.probe.as_ref().and_then(|pr| pr.started_uuid.as_deref());
    match (p.seq, started) {
        (1, None) => Err(invalid(format!(
            "event 1 of invocation {id} is not BuildStarted ({}); a BEP stream starts with BuildStarted",
            p.probe.as_ref().map_or("not a BEP event", |pr| pr.kind)
        ))),
        (1, Some(uuid)) if uuid != id => Err(invalid(format!(
            "BuildStarted.uuid {uuid} differs from the stream's invocation_id {id}"
        ))),
        (1, Some(_)) | (_, None) => Ok(()),
        (n, Some(uuid)) => Err(invalid(format!(
            "event {n} of invocation {id} is a second BuildStarted (uuid {uuid}); a BEP stream has one, as event 1"
        ))),
    }
}

/// The journal records of the acked messages past what was stored before
/// the batch (the new events, in order).
fn new_records(parsed: &[Parsed], acks: &[usize], start: Position) -> Vec<JournalRecord> {
    acks.iter()
        .filter(|&&i| parsed[i].seq > start.accepted)
        .map(|&i| JournalRecord {
            seq: parsed[i].seq,
            kind: parsed[i].kind,
            payload: parsed[i].payload.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b5b0c3e-0000-4000-8000-000000000001";

    fn event(seq: u64, started: Option<&str>) -> Parsed {
        Parsed {
            stream_id: StreamId {
                build_id: "b".into(),
                component: BuildComponent::Tool as i32,
                invocation_id: ID.into(),
            },
            seq,
            kind: RecordKind::BepEvent,
            payload: Bytes::from(format!("event {seq}")),
            probe: Some(Probe {
                started_uuid: started.map(str::to_string),
                build_finished: false,
                last_message: false,
                kind: if started.is_some() {
                    "started"
                } else {
                    "progress"
                },
            }),
        }
    }

    fn finish(seq: u64) -> Parsed {
        Parsed {
            kind: RecordKind::StreamFinished,
            payload: Bytes::new(),
            probe: None,
            ..event(seq, None)
        }
    }

    fn stream(n: u64) -> Vec<Parsed> {
        (1..=n).map(|s| event(s, (s == 1).then_some(ID))).collect()
    }

    fn hash(p: &Parsed) -> u64 {
        p.payload.iter().map(|&b| u64::from(b)).sum::<u64>() + p.seq
    }

    /// Refuses every event whose payload says so.
    struct Gatekeeper;
    impl Admitted for Gatekeeper {
        fn tenant(&self) -> Option<&str> {
            Some("t")
        }
        fn check_event(&mut self, event: &[u8]) -> Result<(), Refusal> {
            if event == b"event 3" {
                return Err(Refusal {
                    status: Status::permission_denied("forbidden option"),
                    reason: "test",
                });
            }
            Ok(())
        }
    }

    fn run(
        parsed: &[Parsed],
        start: Position,
        prechecked: usize,
        gate: Option<&mut (dyn Admitted + '_)>,
        stored: &std::collections::BTreeMap<u64, u64>,
    ) -> Decided {
        decide(
            ID,
            parsed,
            start,
            prechecked,
            &mut RpcSequencer::default(),
            gate,
            |s| stored.get(&s).copied(),
            hash,
        )
    }

    #[test]
    fn a_new_stream_appends_in_order_and_its_finish_sets_the_position() {
        let mut parsed = stream(3);
        parsed.push(finish(4));
        let d = run(&parsed, Position::default(), 0, None, &Default::default());
        assert_eq!(d.acks, vec![0, 1, 2, 3]);
        assert_eq!(d.new_from, Some(0));
        assert_eq!(d.pos.accepted, 4);
        assert_eq!(d.pos.finished_at, Some(4));
        assert!(d.refusal.is_none() && d.denial.is_none() && !d.sequence_error);
        let records = new_records(&parsed, &d.acks, Position::default());
        assert_eq!(
            records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn re_sent_events_are_acked_only_when_byte_identical() {
        let parsed = stream(4);
        let stored: std::collections::BTreeMap<u64, u64> =
            parsed[..2].iter().map(|p| (p.seq, hash(p))).collect();
        let start = Position {
            accepted: 2,
            finished_at: None,
        };
        let d = run(&parsed, start, 0, None, &stored);
        assert_eq!(d.acks, vec![0, 1, 2, 3]);
        assert_eq!(d.duplicates, 2);
        assert_eq!(d.new_from, Some(2));
        assert_eq!(
            new_records(&parsed, &d.acks, start)
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            [3, 4]
        );

        let mut changed = stream(2);
        changed[1].payload = Bytes::from_static(b"other bytes");
        let d = run(&changed, start, 0, None, &stored);
        assert_eq!(d.acks, vec![0], "acks stop before the changed event");
        assert!(d.sequence_error);
        let status = d.refusal.expect("refused");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("byte-identical"), "{status:?}");
    }

    #[test]
    fn event_one_must_be_the_streams_build_started_and_the_only_one() {
        let not_started = vec![event(1, None)];
        let d = run(
            &not_started,
            Position::default(),
            0,
            None,
            &Default::default(),
        );
        assert!(d.acks.is_empty());
        assert!(d.refusal.unwrap().message().contains("is not BuildStarted"));

        let other_id = vec![event(1, Some("another-invocation"))];
        let d = run(&other_id, Position::default(), 0, None, &Default::default());
        assert!(d.refusal.unwrap().message().contains("differs from"));

        let mut second = stream(2);
        second.push(event(3, Some(ID)));
        let d = run(&second, Position::default(), 0, None, &Default::default());
        assert_eq!(d.acks, vec![0, 1]);
        assert_eq!(d.pos.accepted, 2, "the position stops before the refusal");
        assert!(d.refusal.unwrap().message().contains("second BuildStarted"));
    }

    #[test]
    fn a_gap_is_a_sequence_error() {
        let mut parsed = stream(2);
        parsed.push(event(4, None));
        let d = run(&parsed, Position::default(), 0, None, &Default::default());
        assert_eq!(d.acks, vec![0, 1]);
        assert!(d.sequence_error);
        assert_eq!(d.refusal.unwrap().code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn the_gate_denies_a_new_event_unless_it_was_checked_while_held() {
        let parsed = stream(4);
        let mut gate = Gatekeeper;
        let d = run(
            &parsed,
            Position::default(),
            0,
            Some(&mut gate),
            &Default::default(),
        );
        assert_eq!(d.acks, vec![0, 1]);
        assert!(d.refusal.is_none());
        assert_eq!(d.denial.expect("denied").reason, "test");

        // Held events were checked when they arrived: not checked twice.
        let d = run(
            &parsed,
            Position::default(),
            3,
            Some(&mut gate),
            &Default::default(),
        );
        assert_eq!(d.acks, vec![0, 1, 2, 3]);
        assert!(d.denial.is_none());
    }
}
