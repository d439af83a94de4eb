//! Requests in (§16.2–16.6): checking, the initial INVITE's decision,
//! ACK, CANCEL and in-dialog requests routed by Record-Route.

use super::*;

impl Core {
    /// A request whose Request-Line could not be parsed: `505` for an
    /// unknown SIP version, `400` otherwise, when a response can be routed.
    pub(super) fn answer_broken_request(&mut self, from: Peer, msg: &Message, problem: ParseError) {
        if msg.method() == Some(b"ACK") {
            return;
        }
        let Some(via) = msg.top_via() else { return };
        let top_via = build::fixed_top_via(&via, from.addr);
        let reply_to = routing::response_destination(&via, from);
        let (code, phrase) = match problem {
            ParseError::BadVersion => (505, "Version Not Supported"),
            _ => (400, "Bad Request-Line"),
        };
        self.reply_stateless(msg, top_via.as_deref(), reply_to, code, phrase, &[]);
    }

    pub(super) fn on_request(&mut self, now: Instant, from: Peer, msg: Message) {
        // Copied out (msg moves on below), inline: methods are short, and
        // an allocation per message showed in the reject path.
        let method: SmallVec<[u8; 16]> = SmallVec::from_slice(msg.method().unwrap_or_default());
        self.observer.message_in(&method);
        let Some(via) = msg.top_via() else {
            // No Via: a response cannot be routed (§8.2.6.2), so drop.
            self.observer.malformed();
            return;
        };
        let key = TxnKey::server(&msg, &via, &method);
        // The ACK of a final we sent (every reject has one) ends in its
        // transaction, hop by hop (§17.2.1): it goes nowhere, so it needs
        // none of the checks of a request we would act on.
        if &method[..] == b"ACK" && self.absorb_ack(now, from, &key) {
            return;
        }
        let top_via = build::fixed_top_via(&via, from.addr);
        let reply_to = routing::response_destination(&via, from);

        if let Err(m) = check_request(&msg, &method) {
            self.observer.malformed();
            if &method[..] != b"ACK" {
                self.reply_stateless(&msg, top_via.as_deref(), reply_to, m.status, m.phrase, &[]);
            }
            return;
        }
        match &method[..] {
            b"ACK" => return self.on_ack(from, msg, top_via),
            b"CANCEL" => return self.on_cancel(now, from, msg, &key, top_via, reply_to),
            _ => {}
        }
        if let Some(idx) = self.server_txn(&key) {
            let s = &self.servers[idx];
            if !s.sent_from(from) {
                // A copy from another host: repeating our last response
                // to the transaction's sender would let anyone who saw
                // the request make us send to a tenant's dialer.
                return;
            }
            // A retransmission: the machine repeats its last response.
            let gen = s.gen;
            let mut ctx = ctx!(self, now, idx, gen);
            match &s.machine {
                ServerMachine::Invite(m) => m.on_retransmission(&mut ctx),
                ServerMachine::NonInvite(m) => m.on_retransmission(&mut ctx),
            }
            // The 100 repeated while the decision is out: its final
            // response may come from the thread the verdict lands on.
            if self.servers[idx]
                .fwd
                .as_ref()
                .is_some_and(|f| f.deciding.is_some())
            {
                self.out.urge();
            }
            return;
        }
        if self.has_looped(&msg) {
            // Counted as a response sent (482). A loop repeats for every
            // call: one warn line a minute with the count, not one a call.
            tracing::debug!(%from, "request relayed by this proxy before: 482");
            self.loops.0 += 1;
            if self.loops.1.is_none_or(|t| now >= t + WARN_EVERY) {
                tracing::warn!(
                    %from,
                    requests = self.loops.0,
                    "requests this proxy relayed came back to it (a carrier routes them back, or its address is ours): answered 482 Loop Detected, the calls fail"
                );
                self.loops = (0, Some(now));
            }
            return self.reply_stateless(
                &msg,
                top_via.as_deref(),
                reply_to,
                482,
                "Loop Detected",
                &[],
            );
        }
        // §16.3 step 5: this proxy supports no extension a proxy must
        // understand.
        let proxy_require = header_values(&msg, "Proxy-Require");
        if !proxy_require.is_empty() {
            let extra = [("Unsupported", proxy_require.as_str())];
            return self.reply_stateless(
                &msg,
                top_via.as_deref(),
                reply_to,
                420,
                "Bad Extension",
                &extra,
            );
        }
        if msg.to_tag().is_some() {
            return self.in_dialog(now, from, msg, key, top_via, reply_to, &method);
        }
        match &method[..] {
            b"INVITE" if self.draining => {
                let r = Rejection {
                    retry_after: Some(DRAIN_RETRY_AFTER_S),
                    ..local_rejection(
                        503,
                        "Shutting Down",
                        Code::ShuttingDown,
                        "this callguard instance is shutting down; place the call through another one",
                    )
                };
                let tenant = self.gatekeeper.tenant_of(&from);
                self.observer
                    .decision(tenant.as_ref(), Outcome::Reject, Some(r.code));
                self.reject_invite(now, from, msg, key, top_via, reply_to, r);
            }
            b"INVITE" => self.initial_invite(now, from, msg, key, top_via, reply_to),
            b"OPTIONS" if self.draining => {
                let extra = [("Retry-After", "5")];
                self.reply_stateless(
                    &msg,
                    top_via.as_deref(),
                    reply_to,
                    503,
                    "Shutting Down",
                    &extra,
                );
            }
            b"OPTIONS" => {
                // Answered here as a UAS (§11): an extension it requires is
                // one we do not have (§8.2.2.3).
                let require = header_values(&msg, "Require");
                if !require.is_empty() {
                    let extra = [("Unsupported", require.as_str())];
                    return self.reply_stateless(
                        &msg,
                        top_via.as_deref(),
                        reply_to,
                        420,
                        "Bad Extension",
                        &extra,
                    );
                }
                let extra = [("Allow", ALLOW), ("Accept", "application/sdp")];
                self.reply_stateless(&msg, top_via.as_deref(), reply_to, 200, "OK", &extra);
            }
            _ => {
                let extra = [("Allow", ALLOW)];
                self.reply_stateless(
                    &msg,
                    top_via.as_deref(),
                    reply_to,
                    405,
                    "Method Not Allowed",
                    &extra,
                );
            }
        }
    }

    pub(super) fn initial_invite(
        &mut self,
        now: Instant,
        from: Peer,
        msg: Message,
        key: TxnKey,
        top_via: Option<build::ViaText>,
        reply_to: Peer,
    ) {
        if let Err((code, phrase)) = routing::max_forwards(&msg) {
            return self.reply_stateless(&msg, top_via.as_deref(), reply_to, code, phrase, &[]);
        }
        match self.gatekeeper.check(&msg, &from) {
            Verdict::Reject(r) if r.code == Code::SourceNotAuthorized => {
                // A stranger is answered statelessly (§16.11 lets a proxy
                // answer a request itself): no transaction is kept, so a
                // flood of fresh Call-IDs holds no memory. A retransmission
                // gets the same answer (the To tag comes from the
                // transaction key), and the ACK, which names no route of
                // ours, is dropped by `on_ack`.
                self.observer.decision(None, Outcome::Reject, Some(r.code));
                let tag = key.local_tag();
                let bytes = self.explained_response(&msg, top_via.as_deref(), &tag, &r);
                self.out.send(reply_to, bytes);
            }
            Verdict::Reject(r) => {
                self.observer
                    .decision(r.tenant.as_ref(), Outcome::Reject, Some(r.code));
                log_rejected(msg.call_id().unwrap_or_default(), from, &r);
                self.reject_invite(now, from, msg, key, top_via, reply_to, r);
            }
            Verdict::Forward {
                tenant,
                headers,
                warn,
                ticket,
            } => {
                self.observe_forward(&tenant, warn);
                let sips = routing::is_sips_request(&msg);
                let targets = self.targets(sips);
                if targets.is_empty() {
                    let r = self.no_target(sips);
                    self.gatekeeper.settled(Settlement {
                        call_id: msg.call_id().unwrap_or_default(),
                        tenant: &tenant,
                        status: r.status,
                        carrier: None,
                        ticket,
                    });
                    return self.reject_invite(now, from, msg, key, top_via, reply_to, r);
                }
                let mut fwd = Forwarding::new(msg, top_via);
                fwd.targets = targets;
                fwd.extra = headers;
                fwd.tenant = Some(tenant);
                fwd.ticket = ticket;
                let idx = self.park(now, from, key, reply_to, fwd);
                self.try_next_carrier(now, idx);
            }
            Verdict::Pending(job) => {
                // Parked while the decision waits on the state store.
                let mut fwd = Forwarding::new(msg, top_via);
                fwd.deciding = Some(now);
                let idx = self.park(now, from, key, reply_to, fwd);
                // The 100 must leave before the final response, which the
                // verdict may send from another thread.
                self.out.urge();
                let id = DecisionId {
                    slot: idx,
                    gen: self.servers[idx].gen,
                };
                self.decisions.push_back((id, job));
            }
        }
    }

    /// Keeps an initial INVITE in a Proceeding server transaction and
    /// answers `100 Trying`, which stops the dialer's retransmissions.
    pub(super) fn park(
        &mut self,
        now: Instant,
        from: Peer,
        key: TxnKey,
        reply_to: Peer,
        fwd: Box<Forwarding>,
    ) -> usize {
        let trying = build::response(
            &fwd.request,
            fwd.top_via.as_deref(),
            100,
            "Trying",
            None,
            &[],
        );
        self.new_server(now, key, from, Some(fwd), |ctx| {
            ServerMachine::Invite(ServerInvite::new(reply_to, Some(trying), ctx))
        })
    }

    /// Answers an initial INVITE with a final response at once (a
    /// rejection): a Completed server transaction absorbs its ACK.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reject_invite(
        &mut self,
        now: Instant,
        from: Peer,
        msg: Message,
        key: TxnKey,
        top_via: Option<build::ViaText>,
        reply_to: Peer,
        r: Rejection,
    ) {
        let tag = key.local_tag();
        let bytes = self.explained_response(&msg, top_via.as_deref(), &tag, &r);
        let status = r.status;
        self.new_server(now, key, from, None, |ctx| {
            let mut m = ServerInvite::new(reply_to, None, ctx);
            m.final_response(status, bytes, ctx);
            ServerMachine::Invite(m)
        });
    }

    /// Forwards the INVITE of server transaction `sidx` to its next carrier.
    pub(super) fn try_next_carrier(&mut self, now: Instant, sidx: usize) {
        let settings = self.settings.clone();
        let s = &mut self.servers[sidx];
        let (source, sgen) = (s.source, s.gen);
        let Some(fwd) = s.fwd.as_mut() else { return };
        let Some(carrier) = fwd.targets.pop_front() else {
            return;
        };
        let dest = carrier.peer;
        let req = &fwd.request;
        let uri = routing::rewrite_uri_host(req.request_uri().unwrap_or_default(), &dest);
        let token = routing::token(
            &settings.route_key,
            req.call_id().unwrap_or_default(),
            req.from_tag().unwrap_or_default(),
            fwd.tenant.as_deref().unwrap_or(""),
            &carrier.group,
        );
        let rr = routing::record_route(&settings, source, dest, token.as_str(), &carrier.group);
        self.branch_seq += 1;
        let upstream = fwd
            .top_via
            .as_deref()
            .or_else(|| req.values(HeaderName::Via).next());
        let branch = branch_id(
            settings.instance,
            self.shard,
            self.branch_seq,
            &settings.route_key,
            Bound::relayed(req.call_id().unwrap_or_default(), upstream),
        );
        let via = routing::via_value(&settings, dest, &branch);
        let mf = routing::max_forwards(req).unwrap_or(69);
        let bytes = build::forward_request(
            req,
            &Forward {
                uri: Some(uri.as_bytes()),
                via: via.as_bytes(),
                top_via: fwd.top_via.as_deref(),
                record_route: &rr,
                // §16.4: the Route naming us (a dialer's outbound proxy
                // setting) goes; see `initial_route_values` for the rest.
                pop_routes: routing::initial_route_values(req),
                max_forwards: mf,
                extra: &fwd.extra,
            },
        );
        let timeout = self.carrier_timeout();
        let key = TxnKey::client(branch.as_bytes(), b"INVITE");
        let cidx = self.new_client(
            now,
            key,
            Role::Branch,
            Some((sidx, sgen)),
            Some(carrier.name),
            |ctx| ClientMachine::Invite(ClientInvite::start(dest, bytes, timeout, ctx)),
        );
        self.start_timer_c(now, cidx);
        let cgen = self.clients[cidx].gen;
        if let Some(fwd) = self.servers[sidx].fwd.as_mut() {
            fwd.branch = Some((cidx, cgen));
        }
    }

    /// §16.6 step 11: Timer C runs from the moment an INVITE is forwarded,
    /// whatever the next hop answers; only a final response ends it.
    pub(super) fn start_timer_c(&mut self, now: Instant, cidx: usize) {
        let due = now + self.settings.timer_c;
        let c = &mut self.clients[cidx];
        c.timer_c_due = Some(due);
        c.ring_limit = Some(now + self.settings.timer_c * RING_LIMIT_PERIODS);
        self.timers
            .arm_after(now, self.settings.timer_c, cidx, c.gen, Timer::C);
    }

    /// Whether the ACK with `key` ends in a server transaction of ours:
    /// the ACK of a non-2xx final (absorbed, §17.2.1), or one our
    /// transaction has no use for. An ACK of a 2xx that reused the INVITE's
    /// branch is not: it is routed like any other.
    fn absorb_ack(&mut self, now: Instant, from: Peer, key: &TxnKey) -> bool {
        let Some(idx) = self.server_txn(key) else {
            return false;
        };
        let s = &mut self.servers[idx];
        if !s.sent_from(from) {
            // Ends here, with no effect: an ACK from another host would
            // stop the repeats of a final the dialer may not have had.
            return true;
        }
        let gen = s.gen;
        let ServerMachine::Invite(m) = &mut s.machine else {
            return false;
        };
        let mut ctx = ctx!(self, now, idx, gen);
        !matches!(m.on_ack(&mut ctx), AckFor::Success)
    }

    /// An ACK no transaction of ours absorbed: the ACK of a 2xx, its own
    /// transaction, relayed statelessly by Route.
    pub(super) fn on_ack(&mut self, from: Peer, msg: Message, top_via: Option<build::ViaText>) {
        if msg.to_tag().is_none() {
            return;
        }
        match routing::in_dialog(&self.settings, &*self.gatekeeper, &msg, from) {
            Ok((dest, pops)) => {
                let Ok(mf) = routing::max_forwards(&msg) else {
                    return;
                };
                let branch = routing::stateless_branch(&msg);
                let bytes = self.routed_request(&msg, dest, &branch, top_via.as_deref(), pops, mf);
                self.out.send(dest, bytes);
            }
            Err(why) => {
                tracing::debug!(%from, ?why, "dropping an ACK that is not routed through us")
            }
        }
    }

    /// §16.10: a CANCEL is answered here, and the branch being tried is
    /// cancelled once it may be (§9.1: after a provisional response).
    pub(super) fn on_cancel(
        &mut self,
        now: Instant,
        from: Peer,
        msg: Message,
        key: &TxnKey,
        top_via: Option<build::ViaText>,
        reply_to: Peer,
    ) {
        // The CANCEL must come from where the INVITE came from: anyone who
        // saw the INVITE could otherwise cancel a tenant's call.
        let invite = self
            .server_txn(&key.with_method(KeyMethod::Invite))
            .filter(|&i| self.servers[i].sent_from(from));
        let Some(sidx) = invite else {
            return self.reply_stateless(
                &msg,
                top_via.as_deref(),
                reply_to,
                481,
                "Call/Transaction Does Not Exist",
                &[],
            );
        };
        self.reply_stateless(&msg, top_via.as_deref(), reply_to, 200, "OK", &[]);
        let s = &mut self.servers[sidx];
        if !s.machine.proceeding() {
            return;
        }
        let Some(fwd) = s.fwd.as_mut() else { return };
        if fwd.cancelled {
            return;
        }
        fwd.cancelled = true;
        fwd.targets.clear();
        if fwd.deciding.is_some() {
            // Nothing was forwarded yet: the CANCEL ends the call here. The
            // verdict, when it comes, finds the transaction completed.
            return self.local_final(now, sidx, 487, "Request Terminated");
        }
        let branch = fwd.branch;
        let Some(cidx) = self.live_client(branch) else {
            return;
        };
        let c = &mut self.clients[cidx];
        if c.provisional {
            self.send_cancel(now, cidx);
        } else if c.machine.waiting() {
            c.cancel = CancelState::Held;
        }
    }

    /// Sends the CANCEL of INVITE branch `cidx` (its own non-INVITE client
    /// transaction, with the INVITE's branch) and bounds the wait for the
    /// INVITE's final response (§9.1).
    pub(super) fn send_cancel(&mut self, now: Instant, cidx: usize) {
        let t = self.settings.intervals();
        let c = &mut self.clients[cidx];
        if c.cancel == CancelState::Sent {
            return;
        }
        let ClientMachine::Invite(m) = &c.machine else {
            return;
        };
        let (Some(bytes), Some(branch)) = (m.cancel(), m.branch()) else {
            return;
        };
        let dest = m.dest();
        c.cancel = CancelState::Sent;
        self.timers
            .arm_after(now, t.t1_64(), cidx, c.gen, Timer::CancelWait);
        let key = TxnKey::client(&branch, b"CANCEL");
        self.new_client(now, key, Role::Cancel, None, None, |ctx| {
            ClientMachine::NonInvite(ClientNonInvite::start(dest, bytes, t.t1_64(), ctx))
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn in_dialog(
        &mut self,
        now: Instant,
        from: Peer,
        msg: Message,
        key: TxnKey,
        top_via: Option<build::ViaText>,
        reply_to: Peer,
        method: &[u8],
    ) {
        let mf = match routing::max_forwards(&msg) {
            Ok(mf) => mf,
            Err((code, phrase)) => {
                return self.reply_stateless(&msg, top_via.as_deref(), reply_to, code, phrase, &[])
            }
        };
        let (dest, pops) = match routing::in_dialog(&self.settings, &*self.gatekeeper, &msg, from) {
            Ok(next) => next,
            Err(refusal) => {
                // Not relayed: relaying for anyone else would make us an
                // open relay.
                let (code, phrase) = match refusal {
                    Refusal::NotOurs => (404, "Not Here"),
                    Refusal::Forbidden(phrase) => (403, phrase),
                    Refusal::Unresolvable => (478, "Unresolvable Destination"),
                };
                tracing::debug!(%from, code, phrase, "in-dialog request refused");
                return self.reply_stateless(&msg, top_via.as_deref(), reply_to, code, phrase, &[]);
            }
        };
        self.gatekeeper.in_dialog(&msg, &from);
        let invite = method == b"INVITE";
        let upstream = top_via
            .as_deref()
            .or_else(|| msg.values(HeaderName::Via).next());
        let bound = Bound::relayed(msg.call_id().unwrap_or_default(), upstream);
        let branch = self.new_branch(bound);
        let bytes = self.routed_request(&msg, dest, &branch, top_via.as_deref(), pops, mf);
        let trying =
            invite.then(|| build::response(&msg, top_via.as_deref(), 100, "Trying", None, &[]));
        let fwd = Forwarding::new(msg, top_via);
        let sidx = self.new_server(now, key, from, Some(fwd), |ctx| {
            if invite {
                ServerMachine::Invite(ServerInvite::new(reply_to, trying, ctx))
            } else {
                ServerMachine::NonInvite(ServerNonInvite::new(reply_to))
            }
        });
        let link = (sidx, self.servers[sidx].gen);
        let timeout = self.settings.intervals().t1_64();
        let key = TxnKey::client(branch.as_bytes(), method);
        let cidx = self.new_client(now, key, Role::Branch, Some(link), None, |ctx| {
            if invite {
                ClientMachine::Invite(ClientInvite::start(dest, bytes, timeout, ctx))
            } else {
                ClientMachine::NonInvite(ClientNonInvite::start(dest, bytes, timeout, ctx))
            }
        });
        if invite {
            self.start_timer_c(now, cidx);
        }
        let cgen = self.clients[cidx].gen;
        if let Some(fwd) = self.servers[sidx].fwd.as_mut() {
            fwd.branch = Some((cidx, cgen));
        }
    }

    /// An in-dialog request as it goes on: our Via with `branch`, the
    /// Routes that named us removed, Max-Forwards decremented; no
    /// Record-Route (the dialog's route set is already fixed).
    fn routed_request(
        &self,
        msg: &Message,
        dest: Peer,
        branch: &str,
        top_via: Option<&[u8]>,
        pops: usize,
        max_forwards: u32,
    ) -> Bytes {
        let via = routing::via_value(&self.settings, dest, branch);
        build::forward_request(
            msg,
            &Forward {
                uri: None,
                via: via.as_bytes(),
                top_via,
                record_route: &[],
                pop_routes: pops,
                max_forwards,
                extra: &[],
            },
        )
    }
}
