//! The driver of the core's flows on the edge (request, verify, status, admin, delivery
//! receipts). A flow says which IO comes next ([`otpkit_core::flow`]); this module performs it
//! with the Durable Objects, KV, the gateway and D1, and hands back what happened. Every decision
//! is the flow's.

use crate::idempotency_do::IdempotencyCall;
use crate::proto::{DestinationCall, SessionCall};
use crate::workspace_do::WorkspaceCall;
use crate::{audit, config, gateway, workspaces};
use otpkit_core::flow::Idempotent;
use otpkit_core::flow::{
    AdminAction, AdminFlow, Admitted, CancelFlow, Fallback, Flow, HostTraits, Io, Outcome,
    ReceiptFlow, ReceiptSource, RequestFlow, ResendFlow, ResendStep, StatusFlow, Step, VerifyFlow,
    ADMIN_RANDOM_BYTES,
};
use otpkit_core::gateway::Gateways;
use otpkit_core::guard::DeliveryOutcome;
use otpkit_core::http::request::{Dialect, IssueRequest, ResendRequest, VerifyRequest};
use otpkit_core::idempotency::Idempotency;
use otpkit_core::policy::Policy;
use otpkit_core::workspace::{self, WorkspaceRecord};
use otpkit_core::{Entropy, Error, Pepper, Purpose, Reply, Session, UnixMillis};
use serde::de::DeserializeOwned;
use serde::Serialize;
use worker::wasm_bindgen::JsValue;
use worker::{Context, Date, Env, Method, ObjectNamespace, Request, RequestInit};

/// The Worker keeps reuse hints in KV `REUSE`.
const TRAITS: HostTraits = HostTraits { reuse_hints: true };

pub fn now() -> UnixMillis {
    UnixMillis(Date::now().as_millis())
}

/// CSPRNG bytes (`crypto.getRandomValues`).
pub fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|_| Error::Misconfigured {
        message: "no CSPRNG available".into(),
    })?;
    Ok(buf)
}

/// Fresh entropy for a flow that may issue a code.
fn entropy() -> Result<Entropy, Error> {
    Ok(Entropy::from_bytes(&random::<48>()?))
}

/// The driver of a flow of workspace (`ws_id`, `policy`) that sends through the gateways.
fn sending_edge(env: &Env, ws_id: &str, policy: &Policy, now: UnixMillis) -> Result<Edge, Error> {
    Edge::new(env, ws_id, policy.clone(), now, Some(config::gateway(env)?))
}

/// Durable Object calls made while a request is answered (not those that follow the answer).
/// `scripts/test` checks the counts per route, and benchmarks report them, through the
/// `x-otpkit-do-calls` header a Worker adds when `OTPKIT_TRACE_DO_CALLS` is set.
#[derive(Debug, Default)]
pub struct Calls(std::cell::Cell<u32>, std::cell::RefCell<Option<String>>);

impl Calls {
    pub fn get(&self) -> u32 {
        self.0.get()
    }

    /// The workspace the request authenticated as, for its log line.
    pub fn workspace(&self) -> Option<String> {
        self.1.borrow().clone()
    }

    pub fn set_workspace(&self, id: &str) {
        *self.1.borrow_mut() = Some(id.to_string());
    }
}

/// `POST /v1/messaging/otp/request` and `POST /otp/send`.
pub async fn request(
    env: &Env,
    ctx: &Context,
    calls: &Calls,
    pepper: &Pepper,
    ws: &WorkspaceRecord,
    req: IssueRequest,
    idem: Option<Idempotency>,
) -> Result<Reply, Error> {
    let now = now();
    let entropy = entropy()?;
    let (id, senders, policy) = (&ws.id, &ws.senders, &ws.policy);
    let flow = RequestFlow::start(&req, id, senders, policy, now, &entropy, pepper, TRAITS)?;
    let edge = sending_edge(env, id, policy, now)?;
    drive(edge, ctx, calls, Idempotent::new(flow, idem)).await
}

/// `POST /v1/messaging/otp/verify` and `POST /otp/{id}/verify`.
pub async fn verify(
    env: &Env,
    ctx: &Context,
    calls: &Calls,
    ws: &WorkspaceRecord,
    req: VerifyRequest,
    dialect: Dialect,
) -> Result<Reply, Error> {
    in_workspace(env, ctx, calls, ws, |now| {
        VerifyFlow::start(&req, dialect, now, TRAITS)
    })
    .await
}

/// `POST /v1/messaging/otp/sessions/{id}/cancel` and `POST /otp/{id}/cancel`.
pub async fn cancel(
    env: &Env,
    ctx: &Context,
    calls: &Calls,
    ws: &WorkspaceRecord,
    raw_id: &str,
    dialect: Dialect,
) -> Result<Reply, Error> {
    in_workspace(env, ctx, calls, ws, |now| {
        CancelFlow::start(raw_id, dialect, &ws.id, now)
    })
    .await
}

/// `POST /v1/messaging/otp/sessions/{id}/resend` and `POST /otp/{id}/resend`.
#[allow(clippy::too_many_arguments)]
pub async fn resend(
    env: &Env,
    ctx: &Context,
    calls: &Calls,
    pepper: &Pepper,
    ws: &WorkspaceRecord,
    raw_id: &str,
    req: &ResendRequest,
    dialect: Dialect,
    idem: Option<Idempotency>,
) -> Result<Reply, Error> {
    let now = now();
    let entropy = entropy()?;
    let policy = &ws.policy;
    let flow = ResendFlow::start(raw_id, req, dialect, policy, now, &entropy, pepper, TRAITS);
    let edge = sending_edge(env, &ws.id, policy, now)?;
    drive(edge, ctx, calls, Idempotent::new(flow, idem)).await
}

/// `GET /v1/messaging/otp/sessions/{id}` and `GET /otp/{id}/status`.
pub async fn status(
    env: &Env,
    ctx: &Context,
    calls: &Calls,
    ws: &WorkspaceRecord,
    raw_id: &str,
    dialect: Dialect,
) -> Result<Reply, Error> {
    in_workspace(env, ctx, calls, ws, |now| {
        StatusFlow::start(raw_id, dialect, &ws.id, now)
    })
    .await
}

/// Drives a flow of workspace `ws` that sends nothing (no gateway), started at `now`.
async fn in_workspace<F: Flow + 'static>(
    env: &Env,
    ctx: &Context,
    calls: &Calls,
    ws: &WorkspaceRecord,
    start: impl FnOnce(UnixMillis) -> F,
) -> Result<Reply, Error> {
    let now = now();
    let edge = Edge::new(env, &ws.id, ws.policy.clone(), now, None)?;
    drive(edge, ctx, calls, start(now)).await
}

/// The admin routes (the caller checked the admin token and read the body).
pub async fn admin(
    env: &Env,
    ctx: &Context,
    calls: &Calls,
    action: AdminAction<'_>,
) -> Result<Reply, Error> {
    let now = now();
    let flow = AdminFlow::start(action, now, &random::<ADMIN_RANDOM_BYTES>()?);
    let edge = Edge::new(env, "", Policy::default(), now, None)?;
    drive(edge, ctx, calls, flow).await
}

/// `POST /v1/messaging/otp/delivery-receipts/twilio` and `…/json` (SPEC §8; the caller read the
/// raw body and the signature header, no API key). No workspace scopes the flow: the receipt or
/// the receipt index names the session ([`Io::FindReceipt`], [`Io::ApplyReceipt`] and
/// [`Io::Audit`] carry what they need). A receipt that says a message did not arrive is logged
/// once answered. The resends they may ask for (policy `fallbackOnUndelivered`, [`Fallback`]) run
/// after the answer, in `waitUntil`, each in its session's workspace.
pub async fn receipt(
    env: &Env,
    ctx: &Context,
    calls: &Calls,
    pepper: &Pepper,
    source: ReceiptSource<'_>,
    body: &[u8],
) -> Result<Reply, Error> {
    let now = now();
    let settings = config::receipt_settings(env);
    let mut flow = ReceiptFlow::start(source, body, &settings.keys(), now);
    let mut edge = Edge::new(env, "", Policy::default(), now, None)?;
    let answer = answer_of(&mut edge, calls, &mut flow).await;
    for line in flow.log_lines(self::now(), config::log_level(env)) {
        worker::console_log!("{line}");
    }
    let next = flow.poll();
    if next != Step::Done {
        let pepper = pepper.clone();
        ctx.wait_until(async move {
            let calls = Calls::default();
            finish(&mut edge, &calls, &mut flow, next).await;
            for fb in flow.fallbacks() {
                fallback(&edge.env, &calls, &pepper, fb).await;
            }
        });
    }
    answer
}

/// The resend a delivery receipt asked for, driven to its end (its answer only logged).
async fn fallback(env: &Env, calls: &Calls, pepper: &Pepper, fb: &Fallback) {
    let now = now();
    let started = entropy().and_then(|entropy| {
        let flow = ResendFlow::fallback(fb, now, &entropy, pepper, TRAITS);
        let edge = sending_edge(env, &fb.workspace.id, &fb.workspace.policy, now)?;
        Ok((flow, edge))
    });
    let outcome = match started {
        Ok((mut flow, mut edge)) => {
            let answer = answer_of(&mut edge, calls, &mut flow).await;
            let next = flow.poll();
            finish(&mut edge, calls, &mut flow, next).await;
            answer.map(drop)
        }
        Err(e) => Err(e),
    };
    let line = otpkit_core::log::fallback(
        self::now(),
        fb,
        outcome.as_ref().err().map(Error::code),
        config::log_level(env),
    );
    if let Some(line) = line {
        worker::console_log!("{line}");
    }
}

/// Performs the flow's IO up to its answer, counted in `calls`, and returns that answer; what
/// follows the answer runs in `waitUntil`, uncounted.
async fn drive(
    mut edge: Edge,
    ctx: &Context,
    calls: &Calls,
    mut flow: impl Flow + 'static,
) -> Result<Reply, Error> {
    let answer = answer_of(&mut edge, calls, &mut flow).await;
    follow(edge, ctx, flow);
    answer
}

/// Performs the flow's IO up to its answer, counted in `calls`.
async fn answer_of(edge: &mut Edge, calls: &Calls, flow: &mut impl Flow) -> Result<Reply, Error> {
    loop {
        match flow.poll() {
            Step::Io(io) => flow.handle(edge.perform(io, calls).await),
            Step::Answer(answer) => break answer,
            // Only when an IO was left unanswered, which this loop never does.
            Step::Done => break Err(Error::StoreUnavailable),
        }
    }
}

/// What follows the answer, in `waitUntil` (uncounted).
fn follow(mut edge: Edge, ctx: &Context, mut flow: impl Flow + 'static) {
    let next = flow.poll();
    if next != Step::Done {
        ctx.wait_until(async move {
            let calls = Calls::default();
            finish(&mut edge, &calls, &mut flow, next).await;
        });
    }
}

/// Performs a flow's IO from `step` (polled after its answer) until it is done.
async fn finish(edge: &mut Edge, calls: &Calls, flow: &mut impl Flow, mut step: Step) {
    while step != Step::Done {
        if let Step::Io(io) = step {
            flow.handle(edge.perform(io, calls).await);
        }
        step = flow.poll();
    }
}

/// What one request's IO needs: its workspace, its time, the bindings and the gateway.
struct Edge {
    env: Env,
    ws_id: String,
    policy: Policy,
    now: UnixMillis,
    gateway: Option<Gateways>,
    sessions: ObjectNamespace,
    destinations: ObjectNamespace,
    workspaces: ObjectNamespace,
}

fn namespace(env: &Env, binding: &str) -> Result<ObjectNamespace, Error> {
    env.durable_object(binding)
        .map_err(|_| Error::Misconfigured {
            message: format!("Durable Object binding {binding} is missing").into(),
        })
}

impl Edge {
    fn new(
        env: &Env,
        ws_id: &str,
        policy: Policy,
        now: UnixMillis,
        gateway: Option<Gateways>,
    ) -> Result<Edge, Error> {
        Ok(Edge {
            env: env.clone(),
            ws_id: ws_id.into(),
            policy,
            now,
            gateway,
            sessions: namespace(env, "SESSIONS")?,
            destinations: namespace(env, "DESTINATIONS")?,
            workspaces: namespace(env, "WORKSPACE_OBJECTS")?,
        })
    }

    /// Performs one IO; a store that fails answers [`Outcome::failed`], and its failure is
    /// logged with its cause (SPEC §9 "Logs").
    async fn perform(&mut self, io: Io, calls: &Calls) -> Outcome {
        let kind = io.kind();
        match self.try_perform(io, calls).await {
            Ok(outcome) => outcome,
            Err(e) => {
                self.log_failure(kind, &e);
                Outcome::failed(&e)
            }
        }
    }

    /// A `store_failed` line (which binding, which IO, unreachable or corrupt), or a
    /// `config_problem` line when a binding or setting is missing.
    fn log_failure(&self, io: &str, e: &Error) {
        let store = match io {
            "readReuseHint" | "putReuseHint" | "dropReuseHint" | "listWorkspaces"
            | "findReceipt" => "kv",
            "record" | "audit" => "d1",
            _ => "durableObject",
        };
        self.log_failure_in(store, io, e);
    }

    /// [`Edge::log_failure`] naming the store.
    fn log_failure_in(&self, store: &str, io: &str, e: &Error) {
        let level = crate::config::log_level(&self.env);
        let time = UnixMillis(worker::Date::now().as_millis());
        let line = match e {
            Error::Misconfigured { message } => {
                otpkit_core::log::config_problem(time, message, level)
            }
            _ => otpkit_core::log::StoreFailure {
                time,
                store,
                io,
                corrupt: matches!(e, Error::CorruptState { .. }),
                cause: e.code(),
            }
            .line(level),
        };
        if let Some(line) = line {
            worker::console_log!("{line}");
        }
    }

    async fn try_perform(&mut self, io: Io, calls: &Calls) -> Result<Outcome, Error> {
        let policy = || self.policy.clone();
        Ok(match io {
            Io::ReadReuseHint { dest, purpose } => {
                let kv = self.env.kv("REUSE").ok();
                let hint = match kv {
                    Some(kv) => kv.get(&self.reuse_key(&dest, purpose)).text().await,
                    None => Ok(None),
                };
                Outcome::ReuseHint {
                    session_id: hint.ok().flatten(),
                }
            }
            Io::ReadSession { session_id } => {
                let session = match self.session(calls, &session_id, &SessionCall::Get).await? {
                    (404, _) => None,
                    answer => Some(Session::from_json(&ok(answer)?)?),
                };
                Outcome::Session { session }
            }
            Io::Admit {
                dest,
                purpose,
                session_id,
                expires_at,
                test,
                flood_limit,
                spend,
                fraud,
                resend,
            } => {
                let call = DestinationCall::Admit {
                    purpose,
                    session_id,
                    expires_at,
                    test,
                    resend,
                    policy: policy(),
                };
                let mut admission: Admitted = parse(&self.destination(calls, &dest, &call).await?)?;
                // Fraud Guard's prefix, the shield and the day's spend are counted once the guard
                // says send, in one WorkspaceObject call (exact, all or none); a refusal after
                // the guard recorded the send is refunded by the flow.
                let charged = flood_limit.is_some() || spend.is_some() || fraud.is_some();
                if admission == Admitted::Send && charged {
                    let call = WorkspaceCall::Flood {
                        limit: flood_limit,
                        spend,
                        fraud,
                        now: self.now,
                    };
                    let refused: Option<Admitted> =
                        parse(&ok(self.workspace(calls, &self.ws_id, &call).await?)?)?;
                    if let Some(refusal) = refused {
                        admission = refusal;
                    }
                }
                Outcome::Admitted { admission }
            }
            // The DestinationObject waits for an in-flight send itself (Admit answers Reuse or
            // Failed), so it never answers Wait and no flow asks this of the Worker.
            Io::AwaitSend { .. } => return Err(Error::StoreUnavailable),
            Io::ReadActive { dest, purpose } => {
                let call = DestinationCall::Active { purpose };
                parse(&self.destination(calls, &dest, &call).await?)?
            }
            Io::Forget { dest, session_id } => {
                let call = DestinationCall::Forget { session_id };
                self.destination(calls, &dest, &call).await?;
                Outcome::Done
            }
            Io::Deliver { message } => {
                let (outcome, message_id) = match &self.gateway {
                    Some(gw) => {
                        let level = config::log_level(&self.env);
                        gateway::deliver(&self.env, gw, &self.ws_id, &message, level).await
                    }
                    None => (DeliveryOutcome::Failed, None),
                };
                Outcome::Delivery {
                    outcome,
                    message_id,
                }
            }
            // The receipt index (KV, best effort) is written alongside: not a DO call.
            Io::StoreSession { session } => {
                let call = SessionCall::Create {
                    session: session.to_json(),
                };
                let (stored, ()) = futures_util::future::join(
                    self.session(calls, &session.id, &call),
                    self.index_receipts("storeSession", &session),
                )
                .await;
                ok(stored?)?;
                Outcome::Done
            }
            Io::ReportDelivery {
                dest,
                session_id,
                outcome,
            } => {
                let call = DestinationCall::Delivery {
                    session_id,
                    outcome,
                    policy: policy(),
                };
                parse(&self.destination(calls, &dest, &call).await?)?
            }
            Io::Resend { session_id, step } => {
                let apply = matches!(step, ResendStep::Apply { .. });
                let call = SessionCall::Resend {
                    workspace_id: self.ws_id.clone(),
                    step,
                };
                let outcome = parse(&ok(self.session(calls, &session_id, &call).await?)?)?;
                // A new message (its message id): the receipt index follows.
                if let (
                    true,
                    Outcome::Resent {
                        done: true,
                        session: Some(s),
                    },
                ) = (apply, &outcome)
                {
                    self.index_receipts("resend", s).await;
                }
                outcome
            }
            Io::RefundSpend { day, micros } => {
                let call = WorkspaceCall::RefundSpend { day, micros };
                ok(self.workspace(calls, &self.ws_id, &call).await?)?;
                Outcome::Done
            }
            // Fraud Guard (SPEC §9): the counts live in the workspace's object. An approved
            // verification is counted after the answer; the admin flow names its workspace.
            Io::FraudVerified { prefix, window_ms } => {
                let call = WorkspaceCall::FraudVerified {
                    prefix,
                    window_ms,
                    now: self.now,
                };
                ok(self.workspace(calls, &self.ws_id, &call).await?)?;
                Outcome::Done
            }
            Io::ReadFraud { workspace_id } => {
                let answer = self
                    .workspace(calls, &workspace_id, &WorkspaceCall::ReadFraud)
                    .await?;
                Outcome::Prefixes {
                    prefixes: parse(&ok(answer)?)?,
                }
            }
            Io::UnblockPrefix {
                workspace_id,
                prefix,
                now,
            } => {
                let call = WorkspaceCall::Unblock { prefix, now };
                let answer = self.workspace(calls, &workspace_id, &call).await?;
                Outcome::Unblocked {
                    was_blocked: parse(&ok(answer)?)?,
                }
            }
            Io::CancelSession { session_id } => {
                ok(self
                    .session(calls, &session_id, &SessionCall::Cancel)
                    .await?)?;
                Outcome::Done
            }
            Io::PutReuseHint {
                dest,
                purpose,
                session_id,
                ttl_secs,
            } => {
                kv_put(
                    &self.env,
                    &self.reuse_key(&dest, purpose),
                    session_id,
                    ttl_secs,
                )
                .await?;
                Outcome::Done
            }
            Io::DropReuseHint { dest, purpose } => {
                let kv = self.env.kv("REUSE").map_err(|_| Error::StoreUnavailable)?;
                let key = self.reuse_key(&dest, purpose);
                kv.delete(&key).await.map_err(|_| Error::StoreUnavailable)?;
                Outcome::Done
            }
            Io::Verify {
                session_id,
                code,
                transaction,
            } => {
                let call = SessionCall::Verify {
                    workspace_id: self.ws_id.clone(),
                    code: code.0,
                    transaction: transaction.map(|t| *t),
                };
                parse(&ok(self.session(calls, &session_id, &call).await?)?)?
            }
            Io::RecordVerify {
                dest,
                session_id,
                status,
                attempts_left,
            } => {
                let call = DestinationCall::Verified {
                    session_id,
                    status,
                    attempts_left,
                    policy: policy(),
                };
                self.destination(calls, &dest, &call).await?;
                Outcome::Done
            }
            Io::Record { events, deltas } => {
                audit::write(&self.env, &self.ws_id, &events, &deltas).await;
                Outcome::Done
            }
            // Admin reads and writes go through the workspace's object (compare-and-set on the
            // revision, then copied to KV, which authentication reads).
            Io::ReadWorkspace { workspace_id } => {
                let call = WorkspaceCall::Read {
                    workspace_id: workspace_id.clone(),
                };
                let workspace = match self.workspace(calls, &workspace_id, &call).await? {
                    (404, _) => None,
                    answer => Some(WorkspaceRecord::from_json(&ok(answer)?)?),
                };
                Outcome::Workspace { workspace }
            }
            Io::PutWorkspace {
                workspace,
                expected,
            } => {
                let call = WorkspaceCall::Put {
                    workspace: workspace.to_json(),
                    expected,
                };
                match self.workspace(calls, &workspace.id, &call).await? {
                    (409, _) => Outcome::Conflict,
                    answer => {
                        ok(answer)?;
                        Outcome::Done
                    }
                }
            }
            Io::IndexKey {
                key_hash,
                workspace_id,
            } => {
                workspaces::index_key(&self.env, &key_hash, &workspace_id).await?;
                Outcome::Done
            }
            Io::UnindexKey { key_hash } => {
                workspaces::unindex_key(&self.env, &key_hash).await?;
                Outcome::Done
            }
            // Listed from KV (the WorkspaceObjects copy every write there), with KV's cursor.
            // Each record with its keys' `lastUsedAt` (one `LastUsed` call per workspace, at once).
            Io::ListWorkspaces { cursor, limit } => {
                match workspaces::list(&self.env, cursor, limit).await? {
                    Some((mut workspaces, next)) => {
                        let reads = workspaces
                            .iter()
                            .map(|ws| self.workspace(calls, &ws.id, &WorkspaceCall::LastUsed));
                        let answers = futures_util::future::join_all(reads).await;
                        for (ws, answer) in workspaces.iter_mut().zip(answers) {
                            let used: Vec<(String, UnixMillis)> = parse(&ok(answer?)?)?;
                            ws.merge_last_used(|id| {
                                used.iter().find(|(k, _)| k == id).map(|(_, t)| *t)
                            });
                        }
                        Outcome::Workspaces { workspaces, next }
                    }
                    None => Outcome::Conflict,
                }
            }
            // An admin action (no analytics) or a delivery receipt (its analytics), into the
            // trail of the workspace it is about.
            Io::Audit {
                workspace_id,
                events,
                deltas,
            } => {
                audit::write(&self.env, &workspace_id, &events, &deltas).await;
                Outcome::Done
            }
            // The receipt index: KV `rcpt:<key>` → `workspaceId:sessionId`.
            Io::FindReceipt { key } => {
                let kv = self.env.kv("REUSE").map_err(|_| Error::StoreUnavailable)?;
                let owner = kv
                    .get(&format!("rcpt:{key}"))
                    .text()
                    .await
                    .map_err(|_| Error::StoreUnavailable)?;
                Outcome::Owner { owner }
            }
            // Inside the session's object (read, decide, write).
            Io::ApplyReceipt {
                workspace_id,
                session_id,
                receipt,
            } => {
                let call = SessionCall::Receipt {
                    workspace_id: workspace_id.clone(),
                    receipt: *receipt,
                };
                let answer = self
                    .session_in(calls, &workspace_id, &session_id, &call)
                    .await?;
                parse(&ok(answer)?)?
            }
            // SPEC §7 "Idempotency": the key's IdempotencyObject (named by its hash) decides.
            Io::ClaimIdempotency {
                key_hash,
                fingerprint,
            } => {
                let call = IdempotencyCall::Claim { fingerprint };
                parse(&self.idempotency(calls, &key_hash, &call).await?)?
            }
            Io::FinishIdempotency { key_hash, record } => {
                let call = IdempotencyCall::Finish { record };
                self.idempotency(calls, &key_hash, &call).await?;
                Outcome::Done
            }
            Io::ReleaseIdempotency {
                key_hash,
                claimed_at,
            } => {
                let call = IdempotencyCall::Release { claimed_at };
                self.idempotency(calls, &key_hash, &call).await?;
                Outcome::Done
            }
            Io::Pause { millis } => {
                worker::Delay::from(std::time::Duration::from_millis(millis)).await;
                Outcome::Done
            }
        })
    }

    fn reuse_key(&self, dest: &str, purpose: Purpose) -> String {
        format!("reuse:{}:{dest}:{}", self.ws_id, purpose.as_str())
    }

    /// A WorkspaceObject call (named by the workspace id): status and text.
    async fn workspace(
        &self,
        calls: &Calls,
        ws_id: &str,
        body: &WorkspaceCall,
    ) -> Result<(u16, String), Error> {
        call(calls, &self.workspaces, ws_id, body).await
    }

    /// A SessionObject call (objects are named `workspaceId:sessionId`): status and text.
    async fn session(
        &self,
        calls: &Calls,
        session_id: &str,
        body: &SessionCall,
    ) -> Result<(u16, String), Error> {
        self.session_in(calls, &self.ws_id, session_id, body).await
    }

    /// [`Edge::session`] of workspace `ws_id`.
    async fn session_in(
        &self,
        calls: &Calls,
        ws_id: &str,
        session_id: &str,
        body: &SessionCall,
    ) -> Result<(u16, String), Error> {
        let name = format!("{ws_id}:{session_id}");
        call(calls, &self.sessions, &name, body).await
    }

    /// Writes the receipt index entries of a delivered session (SPEC §8,
    /// [`otpkit_core::delivery::index_entries`]) to KV `rcpt:<key>`, kept until the session is
    /// purged. Best effort: a failed write is logged (as IO `io` on KV) and fails nothing.
    async fn index_receipts(&self, io: &str, session: &Session) {
        let entries = otpkit_core::delivery::index_entries(session);
        if entries.is_empty() {
            return;
        }
        let left_ms = session.purge_at().0.saturating_sub(now().0);
        let ttl_secs = left_ms.div_ceil(1000).max(60);
        let env = &self.env;
        let puts = entries.into_iter().map(|(key, owner)| async move {
            kv_put(env, &format!("rcpt:{key}"), owner, ttl_secs).await
        });
        let results = futures_util::future::join_all(puts).await;
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            self.log_failure_in("kv", io, &e);
        }
    }

    /// An IdempotencyObject call (named by the key's hash, which is per workspace) that must
    /// answer 200: its text.
    async fn idempotency(
        &self,
        calls: &Calls,
        key_hash: &str,
        body: &IdempotencyCall,
    ) -> Result<String, Error> {
        let ns = namespace(&self.env, "IDEMPOTENCY")?;
        ok(call(calls, &ns, key_hash, body).await?)
    }

    /// A DestinationObject call (named `workspaceId:dest`) that must answer 200: its text.
    async fn destination(
        &self,
        calls: &Calls,
        dest: &str,
        body: &DestinationCall,
    ) -> Result<String, Error> {
        let name = format!("{}:{dest}", self.ws_id);
        ok(call(calls, &self.destinations, &name, body).await?)
    }
}

/// Records that key `key_id` of workspace `ws_id` authenticated a request at `now`, when
/// [`workspace::last_used_due`] says this isolate's last record of it is an hour old (or there
/// is none): one `Touch` to the workspace's object, in `wait_until` (never on the response path,
/// not counted in `x-otpkit-do-calls`; a failure is ignored: the next due use tries again).
pub fn note_key_use(env: &Env, ctx: &Context, ws_id: &str, key_id: &str, now: UnixMillis) {
    thread_local! {
        static RECORDED: std::cell::RefCell<std::collections::HashMap<String, UnixMillis>> =
            std::cell::RefCell::default();
    }
    let due = RECORDED.with(|r| {
        let mut r = r.borrow_mut();
        if !workspace::last_used_due(r.get(key_id).copied(), now) {
            return false;
        }
        // Bounded: forgetting only means one more write for a key.
        if r.len() >= 10_000 {
            r.clear();
        }
        r.insert(key_id.to_string(), now);
        true
    });
    if !due {
        return;
    }
    let Ok(ns) = namespace(env, "WORKSPACE_OBJECTS") else {
        return;
    };
    let (ws_id, body) = (
        ws_id.to_string(),
        WorkspaceCall::Touch {
            key_id: key_id.to_string(),
            at: now,
        },
    );
    ctx.wait_until(async move {
        let _ = call(&Calls::default(), &ns, &ws_id, &body).await;
    });
}

/// One internal call: POST JSON, answer status and text.
async fn call<T: Serialize>(
    calls: &Calls,
    ns: &ObjectNamespace,
    name: &str,
    body: &T,
) -> Result<(u16, String), Error> {
    calls.0.set(calls.0.get().saturating_add(1));
    let stub = ns.get_by_name(name).map_err(|_| Error::StoreUnavailable)?;
    let json = serde_json::to_string(body).map_err(|_| Error::StoreUnavailable)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(JsValue::from_str(&json)));
    let req = Request::new_with_init("https://do.internal/", &init)
        .map_err(|_| Error::StoreUnavailable)?;
    let mut resp = stub
        .fetch_with_request(req)
        .await
        .map_err(|_| Error::StoreUnavailable)?;
    let text = resp.text().await.map_err(|_| Error::StoreUnavailable)?;
    Ok((resp.status_code(), text))
}

/// An internal answer that must be 200, else the error it carries (as a store failure).
fn ok((status, text): (u16, String)) -> Result<String, Error> {
    match status {
        200 => Ok(text),
        _ if text.contains("\"INTERNAL_ERROR\"") => Err(Error::CorruptState {
            message: "stored state could not be read".into(),
        }),
        _ => Err(Error::StoreUnavailable),
    }
}

fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|_| Error::StoreUnavailable)
}

async fn kv_put(env: &Env, key: &str, value: String, ttl_secs: u64) -> Result<(), Error> {
    let kv = env.kv("REUSE").map_err(|_| Error::StoreUnavailable)?;
    kv.put(key, value)
        .map_err(|_| Error::StoreUnavailable)?
        .expiration_ttl(ttl_secs)
        .execute()
        .await
        .map_err(|_| Error::StoreUnavailable)
}
