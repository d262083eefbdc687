//! One client connection: the Hello on the first stream, then concurrent request streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use keyrelay_protocol::{CallerContext, ErrorCode, Hello, PROTOCOL_VERSION, Request, Response};
use quinn::{Connection, Incoming, RecvStream, SendStream, VarInt};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, field};

use super::request::{self, ClientContext, error_response, write_response};
use super::{HELLO_TIMEOUT, Service};
use crate::access;
use crate::audit::{AuditEvent, AuditRecord, AuditResult};
use crate::catalogue;
use crate::policy::ClientPolicy;

/// Application error code for a connection closed because its Hello failed.
const CLOSE_HELLO_FAILED: VarInt = VarInt::from_u32(1);

/// The same message for an unknown KeyId and a wrong secret.
const AUTHENTICATION_FAILED_MESSAGE: &str =
    "authentication failed: unknown KeyId or wrong KeySecret";

/// Serves one connection until the client closes it or the server shuts down.
///
/// `tracker` is owned by the connection's tasks while they run, so shutdown can wait for them.
/// A connection still in its handshake or Hello when shutdown starts is dropped.
pub(super) async fn serve(
    incoming: Incoming,
    service: Arc<Service>,
    mut stop: watch::Receiver<bool>,
    tracker: mpsc::Sender<()>,
) {
    let remote = incoming.remote_address();
    let span = tracing::info_span!("connection", remote = %remote, key_id = field::Empty);
    async move {
        let admitted = tokio::select! {
            admitted = admit(incoming, &service, remote) => admitted,
            _ = stop.wait_for(|stopping| *stopping) => None,
        };
        let Some((connection, (client, caller))) = admitted else {
            return;
        };
        tracing::Span::current().record("key_id", client.key_id.as_str());
        let context = Arc::new(ClientContext {
            service,
            client,
            remote,
            caller,
        });
        serve_streams(&connection, context, stop, tracker).await;
    }
    .instrument(span)
    .await;
}

/// An authenticated client and the caller context its Hello reported.
type Admitted = (ClientPolicy, CallerContext);

/// Completes the handshake and the Hello. Returns the connection and its authenticated client.
async fn admit(
    incoming: Incoming,
    service: &Arc<Service>,
    remote: SocketAddr,
) -> Option<(Connection, Admitted)> {
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::info!(%error, "connection rejected during the handshake");
            return None;
        }
    };
    tracing::info!("connection accepted");
    let client = hello_phase(&connection, service, remote).await?;
    Some((connection, client))
}

async fn serve_streams(
    connection: &Connection,
    context: Arc<ClientContext>,
    mut stop: watch::Receiver<bool>,
    tracker: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = connection.accept_bi() => accepted,
            _ = stop.wait_for(|stopping| *stopping) => return,
        };
        match accepted {
            Ok((send, recv)) => spawn_request(send, recv, context.clone(), tracker.clone()),
            Err(reason) => {
                tracing::info!(%reason, "connection closed");
                return;
            }
        }
    }
}

fn spawn_request(
    send: SendStream,
    recv: RecvStream,
    context: Arc<ClientContext>,
    tracker: mpsc::Sender<()>,
) {
    let span = tracing::info_span!("request", stream = send.id().index());
    let task = async move {
        request::serve(send, recv, context).await;
        drop(tracker);
    };
    tokio::spawn(task.instrument(span));
}

/// Reads the Hello on the first stream and authenticates it. Returns the client on success.
/// On failure it sends the error, closes the connection and returns `None`.
async fn hello_phase(
    connection: &Connection,
    service: &Arc<Service>,
    remote: SocketAddr,
) -> Option<Admitted> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, first_request(connection)).await;
    let (mut send, request, started) = match first {
        Ok(Some(first)) => first,
        Ok(None) => return None,
        Err(_) => {
            tracing::info!(
                timeout_s = HELLO_TIMEOUT.as_secs(),
                "timed out waiting for the Hello; closing the connection"
            );
            connection.close(CLOSE_HELLO_FAILED, b"timed out waiting for the Hello");
            return None;
        }
    };
    let (response, client) = match request {
        Ok(Request::Hello(hello)) => answer_hello(service, hello, remote, started).await,
        Ok(Request::Sign(_)) => (not_authenticated(), None),
        Err(message) => (error_response(ErrorCode::BAD_REQUEST, message), None),
    };
    write_response(&mut send, &response).await;
    if client.is_none() {
        connection.close(CLOSE_HELLO_FAILED, b"Hello failed");
    }
    client
}

type FirstRequest = (SendStream, Result<Request, String>, Instant);

async fn first_request(connection: &Connection) -> Option<FirstRequest> {
    let (send, mut recv) = match connection.accept_bi().await {
        Ok(streams) => streams,
        Err(reason) => {
            tracing::info!(%reason, "connection closed before its Hello");
            return None;
        }
    };
    let request = request::read_request(&mut recv).await;
    Some((send, request, Instant::now()))
}

fn not_authenticated() -> Response {
    tracing::info!("request before Hello rejected");
    let message = "the first request of a connection must be a Hello".to_owned();
    error_response(ErrorCode::NOT_AUTHENTICATED, message)
}

async fn answer_hello(
    service: &Arc<Service>,
    hello: Hello,
    remote: SocketAddr,
    started: Instant,
) -> (Response, Option<Admitted>) {
    if hello.version != PROTOCOL_VERSION {
        tracing::info!(
            version = hello.version,
            "Hello with unsupported protocol version"
        );
        let message = format!(
            "protocol version {} is not supported; this server speaks version {PROTOCOL_VERSION}",
            hello.version
        );
        return (
            error_response(ErrorCode::UNSUPPORTED_VERSION, message),
            None,
        );
    }
    let service = service.clone();
    let span = tracing::Span::current();
    let outcome = tokio::task::spawn_blocking(move || {
        span.in_scope(|| authenticate(&service, &hello, remote, started))
    });
    match outcome.await {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::error!(%error, "authentication task failed");
            let message = "internal error during authentication".to_owned();
            (error_response(ErrorCode::INTERNAL, message), None)
        }
    }
}

/// Checks the credential and the client's validity window and source network, and writes
/// the audit record. Blocks on the audit write.
fn authenticate(
    service: &Service,
    hello: &Hello,
    remote: SocketAddr,
    started: Instant,
) -> (Response, Option<Admitted>) {
    let state = service.policy.current();
    let client = state
        .authenticator
        .authenticate(&hello.key_id, &hello.key_secret);
    let key_id = request::loggable_key_id(&hello.key_id);
    let decision = match client {
        None => Err(error_response(
            ErrorCode::AUTHENTICATION_FAILED,
            AUTHENTICATION_FAILED_MESSAGE.into(),
        )),
        Some(client) => access::check_client(client, remote.ip(), time::OffsetDateTime::now_utc())
            .map(|()| client)
            .map_err(|refusal| error_response(refusal.code, refusal.message)),
    };
    let mut record = AuditRecord::new(AuditEvent::Authenticate, &key_id, remote);
    record.caller = Some(hello.caller.clone());
    if let Err(Response::Error(reply)) = &decision {
        record.result = AuditResult::Refused;
        record.reason = Some(reply.message.clone());
    }
    record.latency_us = request::elapsed_us(started);
    if let Err(error) = service.audit.write(&record) {
        tracing::error!(%error, "audit log write failed; rejecting the Hello");
        return (request::audit_unavailable(), None);
    }
    let client = match decision {
        Ok(client) => client,
        Err(response) => {
            tracing::info!(
                key_id = %key_id,
                reason = record.reason.as_deref().unwrap_or("none"),
                "authentication refused"
            );
            return (response, None);
        }
    };
    let catalogue = catalogue::build(&service.backend, client, service.max_input_len);
    let objects: usize = catalogue.tokens.iter().map(|t| t.objects.len()).sum();
    let tokens = catalogue.tokens.len();
    tracing::info!(key_id = %client.key_id, tokens, objects, "client authenticated");
    let admitted = (client.clone(), hello.caller.clone());
    (Response::Welcome(catalogue), Some(admitted))
}
