//! The HTTP/1.1 server: accepts connections (over TLS when configured),
//! reads each request, applies the configured latency around the handling,
//! and either answers or closes the connection without a reply (injected
//! drops).
//!
//! It serves with hyper directly because dropping a connection is part of
//! the contract: when the service returns an error, hyper closes the socket
//! and the client sees a connection error, not a response.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::config::{Service, SimConfig};
use super::handlers::reply::{Disconnect, Reply, Request};
use super::lifecycle::Clock;
use super::state::State;

/// Request bodies larger than this are refused (413) without being handled.
const MAX_BODY: usize = 1 << 20;

/// How long a TLS handshake may take: a client that connects and says
/// nothing must not hold a task for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server task and the [`super::Sim`] handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Everything the simulator remembers.
    pub(crate) state: Mutex<State>,
    /// The configured latency; half is slept before handling, half after.
    pub(crate) latency: Duration,
    /// `http`, or `https` when served over TLS.
    pub(crate) scheme: &'static str,
}

impl Shared {
    /// Builds the state for `config`; the clock starts now.
    pub(crate) fn new(config: SimConfig) -> Shared {
        let latency = config.latency;
        let https = config.tls.is_some();
        Shared {
            state: Mutex::new(State::new(config, Clock::start())),
            latency,
            scheme: if https { "https" } else { "http" },
        }
    }
}

/// The error a request handler returns to make hyper close the connection
/// without answering.
#[derive(Debug)]
pub(crate) struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// A response body sent in one piece.
#[derive(Debug)]
pub(crate) struct Full(
    /// The bytes not sent yet.
    Option<Bytes>,
);

impl Body for Full {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// Which service a listener serves, and its own address (for requests
/// without a `Host` header).
#[derive(Debug, Clone)]
pub(crate) struct Front {
    /// The MDE API and the login, or Microsoft Graph.
    pub(crate) service: Service,
    /// The listener's bound address.
    pub(crate) local: Arc<str>,
}

/// Accepts connections until `stop` turns true (or its sender goes away),
/// then lets open connections finish their current request for up to a
/// second before cutting them. With `tls`, each connection first completes
/// a TLS handshake; one that fails (a plain-HTTP client, a client that does
/// not trust the certificate) ends that connection only. Every request is
/// served as `front` says: the MDE API and login, or Graph.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    tls: Option<TlsAcceptor>,
    front: Front,
) {
    let mut conns = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match &tls {
                        Some(acceptor) => {
                            conns.spawn(serve_tls(acceptor.clone(), stream, peer, shared.clone(), stop.clone(), front.clone()));
                        }
                        None => {
                            conns.spawn(serve_connection(stream, shared.clone(), stop.clone(), front.clone()));
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!("simulator: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(1), drain).await.is_err() {
        conns.abort_all();
    }
}

/// Completes the TLS handshake of one connection, then serves it. A failed
/// or stalled handshake is logged at debug level and closes only this
/// connection.
async fn serve_tls(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    front: Front,
) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_connection(tls, shared, stop, front).await,
        Ok(Err(e)) => tracing::debug!("simulator: TLS handshake with {peer} failed: {e}"),
        Err(_) => tracing::debug!("simulator: TLS handshake with {peer} timed out"),
    }
}

/// Serves one keep-alive connection, plain or TLS.
async fn serve_connection<S>(
    stream: S,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    front: Front,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(shared.clone(), front.clone(), req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // Idle keep-alive connections stay open until the client closes
        // them, so a client waiting out a long Retry-After never races a
        // server-side close when it sends its next request.
        .header_read_timeout(None)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Reads a whole body, or `None` when it exceeds [`MAX_BODY`].
async fn read_body(mut body: Incoming) -> Result<Option<Vec<u8>>, hyper::Error> {
    let mut buf = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > MAX_BODY {
                return Ok(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Some(buf))
}

/// Handles one request: latency, the state's answer, drops.
async fn handle(
    shared: Arc<Shared>,
    front: Front,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            let r = Reply::error(413, "RequestEntityTooLarge", "Request body is too large");
            return Ok(to_response(r));
        }
        // The client went away mid-body: nobody is left to answer.
        Err(_) => return Err(Dropped),
    };
    let path = parts.uri.path();
    let half = if path.starts_with("/_sim/") { Duration::ZERO } else { shared.latency / 2 };
    if !half.is_zero() {
        tokio::time::sleep(half).await;
    }
    let host = parts.headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or(&front.local);
    let authorization =
        parts.headers.get(hyper::header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    let request = Request {
        method: &parts.method,
        path,
        query: parts.uri.query(),
        scheme: shared.scheme,
        host,
        authorization,
        body: &body,
        headers: &parts.headers,
        service: front.service,
    };
    let reply = {
        let mut state = lock(&shared.state);
        state.handle(&request, Instant::now())
    };
    if reply.drop == Some(Disconnect::Before) {
        return Err(Dropped);
    }
    if !half.is_zero() {
        tokio::time::sleep(half).await;
    }
    if reply.drop == Some(Disconnect::After) {
        return Err(Dropped);
    }
    Ok(to_response(reply))
}

/// Turns a [`Reply`] into an HTTP response.
fn to_response(reply: Reply) -> hyper::Response<Full> {
    let mut res = hyper::Response::new(Full(Some(Bytes::from(reply.body))));
    *res.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    // The configured text was checked to be a header value; one that is not
    // falls back to the real wait rather than dropping the header.
    match reply.retry_after_text.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
        Some(text) => {
            headers.insert(RETRY_AFTER, text);
        }
        None => {
            if let Some(secs) = reply.retry_after {
                headers.insert(RETRY_AFTER, HeaderValue::from(secs));
            }
        }
    }
    if let Some(challenge) = reply.www_authenticate.as_deref()
        && let Ok(value) = HeaderValue::from_str(challenge)
    {
        headers.insert(WWW_AUTHENTICATE, value);
    }
    res
}

/// Locks the state; a panic in another request must not take the whole
/// simulator down, so a poisoned lock is used as is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
