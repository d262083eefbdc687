//! One request stream after authentication: read, check against the policy, sign, audit,
//! reply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use keyrelay_protocol::{
    CallerContext, ErrorCode, ErrorReply, MAX_MESSAGE_LEN, Request, Response, SignInput,
    SignRequest, decode, encode,
};
use quinn::{RecvStream, SendStream};

use super::Service;
use crate::access::{self, Refusal};
use crate::audit::{
    AuditEvent, AuditRecord, AuditResult, InputKind, mechanism_name, parameter_json, sha256_hex,
};
use crate::policy::ClientPolicy;
use crate::quota::Charge;
use crate::signing::{self, Rejection};

/// Longest KeyId copied into logs and audit records; longer ones are cut.
const MAX_LOGGED_KEY_ID_LEN: usize = 64;

/// An authenticated connection's client.
#[derive(Debug)]
pub(super) struct ClientContext {
    pub service: Arc<Service>,
    pub client: ClientPolicy,
    pub remote: SocketAddr,
    /// The calling process as the Hello reported it, repeated in each sign record.
    pub caller: CallerContext,
}

/// Serves one request stream.
pub(super) async fn serve(mut send: SendStream, mut recv: RecvStream, context: Arc<ClientContext>) {
    let started = Instant::now();
    let response = match read_request(&mut recv).await {
        Ok(Request::Sign(request)) => sign(context, request, started).await,
        Ok(Request::Hello(_)) => {
            tracing::info!("Hello on a later stream rejected");
            let message = "Hello is only valid on the first stream of a connection".to_owned();
            error_response(ErrorCode::BAD_REQUEST, message)
        }
        Err(message) => error_response(ErrorCode::BAD_REQUEST, message),
    };
    write_response(&mut send, &response).await;
}

/// Reads one request to the end of the stream and decodes it. The error is a message for
/// the client.
pub(super) async fn read_request(recv: &mut RecvStream) -> Result<Request, String> {
    let bytes = recv.read_to_end(MAX_MESSAGE_LEN).await.map_err(|error| {
        tracing::info!(%error, "cannot read request");
        format!("cannot read request: {error}")
    })?;
    decode(&bytes).map_err(|error| {
        tracing::info!(%error, len = bytes.len(), "cannot decode request");
        format!("cannot decode request: {error}")
    })
}

/// Sends `response` and finishes the stream, then waits briefly for the client to
/// acknowledge it, so a shutdown right after does not lose it.
pub(super) async fn write_response(send: &mut SendStream, response: &Response) {
    let bytes = encode(response).unwrap_or_else(|error| {
        tracing::error!(%error, "cannot encode response");
        let message = "the server could not encode its response".to_owned();
        encode(&error_response(ErrorCode::INTERNAL, message))
            .expect("a short error reply always encodes")
    });
    if let Err(error) = send.write_all(&bytes).await {
        tracing::info!(%error, "cannot send response");
        return;
    }
    if send.finish().is_ok() {
        let acknowledged = send.stopped();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), acknowledged).await;
    }
}

/// Builds an error response that carries no backend return value.
pub(super) fn error_response(code: ErrorCode, message: String) -> Response {
    Response::Error(ErrorReply {
        code,
        backend_rv: 0,
        message,
    })
}

/// Builds the response sent when the audit record could not be written.
pub(super) fn audit_unavailable() -> Response {
    let message = "the audit log is unavailable, so the request was not carried out".to_owned();
    error_response(ErrorCode::AUDIT_UNAVAILABLE, message)
}

/// Returns `key_id` cut to [`MAX_LOGGED_KEY_ID_LEN`] characters, so a client cannot flood
/// logs and the audit log with a huge KeyId.
pub(super) fn loggable_key_id(key_id: &str) -> String {
    match key_id.char_indices().nth(MAX_LOGGED_KEY_ID_LEN) {
        Some((end, _)) => format!("{}...", &key_id[..end]),
        None => key_id.to_owned(),
    }
}

/// Returns the microseconds elapsed since `started`.
pub(super) fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

async fn sign(context: Arc<ClientContext>, request: SignRequest, started: Instant) -> Response {
    tracing::info!(
        key = %request.key_name,
        mechanism = %mechanism_name(request.mechanism),
        input_len = request.input.bytes().len(),
        "sign request"
    );
    let span = tracing::Span::current();
    let task = tokio::task::spawn_blocking(move || {
        span.in_scope(|| sign_and_audit(&context, &request, started))
    });
    task.await.unwrap_or_else(|error| {
        tracing::error!(%error, "signing task failed");
        error_response(
            ErrorCode::INTERNAL,
            "internal error while signing".to_owned(),
        )
    })
}

/// The result of a sign request before it is audited.
struct Outcome {
    token: Option<String>,
    certificate_sha256: Option<String>,
    result: Result<Vec<u8>, Failure>,
}

impl Outcome {
    fn refused(refusal: Refusal) -> Self {
        let rejection = Rejection {
            code: refusal.code,
            message: refusal.message,
        };
        Self {
            token: None,
            certificate_sha256: None,
            result: Err(rejection.into()),
        }
    }
}

struct Failure {
    audit_result: AuditResult,
    reply: ErrorReply,
}

impl From<Rejection> for Failure {
    fn from(rejection: Rejection) -> Self {
        Self {
            audit_result: AuditResult::Refused,
            reply: ErrorReply {
                code: rejection.code,
                backend_rv: 0,
                message: rejection.message,
            },
        }
    }
}

/// Signs if the policy allows, writes the audit record and returns the response. Blocks.
fn sign_and_audit(context: &ClientContext, request: &SignRequest, started: Instant) -> Response {
    let outcome = decide_and_sign(context, request);
    let mut record = sign_record(context, request, &outcome);
    record.latency_us = elapsed_us(started);
    if let Err(error) = context.service.audit.write(&record) {
        tracing::error!(%error, "audit log write failed; withholding the result");
        return audit_unavailable();
    }
    match outcome.result {
        Ok(signature) => {
            tracing::info!(
                signature_len = signature.len(),
                latency_us = record.latency_us,
                "signed"
            );
            Response::Signature(signature)
        }
        Err(failure) => {
            let reply = failure.reply;
            let (code, backend_rv) = (reply.code, reply.backend_rv);
            tracing::info!(%code, backend_rv, message = %reply.message, "sign request failed");
            Response::Error(reply)
        }
    }
}

fn decide_and_sign(context: &ClientContext, request: &SignRequest) -> Outcome {
    let service = &context.service;
    let state = service.policy.current();
    let now = time::OffsetDateTime::now_utc();
    let remote = context.remote.ip();
    let (client, key_policy) =
        match access::check_sign(&state, &context.client, remote, request, now) {
            Ok(entries) => entries,
            Err(refusal) => return Outcome::refused(refusal),
        };
    let Some(key) = service.backend.key(&request.key_name) else {
        let message = format!("key \"{}\" is not allowed for this KeyId", request.key_name);
        return Outcome::refused(Refusal {
            code: ErrorCode::KEY_NOT_ALLOWED,
            message,
        });
    };
    let charge = Charge {
        key_id: &client.key_id,
        key: &key.name,
        client_quota: client.rules.quota,
        key_quota: key_policy.rules.quota,
    };
    let result = signing::plan(
        key.kind,
        request.mechanism,
        &request.parameter,
        &request.input,
        service.max_input_len,
    )
    .map_err(Failure::from)
    .and_then(|operation| {
        check_token_supports(context, &key.token, request.mechanism)?;
        service.quotas.reserve(&charge, now).map_err(|message| {
            Failure::from(Rejection {
                code: access::POLICY_REFUSED,
                message,
            })
        })?;
        service
            .backend
            .sign(&key, &operation)
            .map_err(backend_failure)
    });
    Outcome {
        token: Some(key.token.clone()),
        certificate_sha256: access::certificate_sha256(&key.objects),
        result,
    }
}

fn check_token_supports(
    context: &ClientContext,
    token: &str,
    mechanism: u64,
) -> Result<(), Failure> {
    let token = context.service.backend.token(token);
    if token.is_some_and(|token| token.mechanism(mechanism).is_some()) {
        return Ok(());
    }
    let message = format!(
        "the backend token does not support {} for signing",
        mechanism_name(mechanism)
    );
    Err(Rejection {
        code: ErrorCode::MECHANISM_INVALID,
        message,
    }
    .into())
}

fn backend_failure(error: crate::backend::BackendError) -> Failure {
    tracing::warn!(%error, "backend signing failed");
    let (backend_rv, function) = error
        .ck_rv()
        .unwrap_or((cryptoki_sys::CKR_GENERAL_ERROR, "the backend".to_owned()));
    let message = format!("{function} failed with CKR {backend_rv:#x}");
    Failure {
        audit_result: AuditResult::Failed,
        reply: ErrorReply {
            code: ErrorCode::BACKEND,
            backend_rv,
            message,
        },
    }
}

fn sign_record(context: &ClientContext, request: &SignRequest, outcome: &Outcome) -> AuditRecord {
    let mut record = AuditRecord::new(AuditEvent::Sign, &context.client.key_id, context.remote);
    record.caller = Some(context.caller.clone());
    record.token = outcome.token.clone();
    record.key = Some(request.key_name.clone());
    record.certificate_sha256 = outcome.certificate_sha256.clone();
    record.mechanism = Some(mechanism_name(request.mechanism));
    record.mechanism_parameter = parameter_json(&request.parameter);
    record.input = Some(match request.input {
        SignInput::Data(_) => InputKind::Data,
        SignInput::Digest(_) => InputKind::Digest,
    });
    record.data_sha256 = Some(sha256_hex(request.input.bytes()));
    match &outcome.result {
        Ok(signature) => record.signature_sha256 = Some(sha256_hex(signature)),
        Err(failure) => {
            record.result = failure.audit_result;
            record.reason = Some(failure.reply.message.clone());
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loggable_key_id_cuts_long_values() {
        let long = "k".repeat(1000);

        let logged = loggable_key_id(&long);

        assert_eq!(logged.len(), MAX_LOGGED_KEY_ID_LEN + 3);
        assert_eq!(
            loggable_key_id("kr_0123456789abcdef"),
            "kr_0123456789abcdef"
        );
    }
}
