//! Health checks of HTTP/2 backends: `GET <endpoint>` on a connection of the check's own, or,
//! with `health_check_endpoint = "grpc"`, the gRPC health protocol (`grpc.health.v1.Health/
//! Check` for the server as a whole, `service = ""`): UP only when it answers `SERVING`.
//! The two protobuf messages are tiny and hand-encoded (no code generation, no protoc).
use super::CheckError;
use crate::upstream::Upstream;
use bytes::Bytes;

/// The `health_check_endpoint` value that selects the gRPC health protocol.
pub const ENDPOINT: &str = "grpc";

const PATH: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// Largest answer body read.
const MAX_BODY: usize = 64 * 1024;

/// An empty `HealthCheckRequest` (all fields default: the whole server) in a gRPC frame:
/// not compressed, length 0.
const REQUEST: [u8; 5] = [0, 0, 0, 0, 0];

/// The serving status in a gRPC-framed `HealthCheckResponse` (field 1, a varint enum; absent
/// means 0, UNKNOWN). Pure.
pub fn serving_status(body: &[u8]) -> Result<u64, String> {
    if body.len() < 5 {
        return Err("no gRPC message in the answer".into());
    }
    if body[0] != 0 {
        return Err("compressed gRPC message (not asked for)".into());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let msg = body
        .get(5..5 + len)
        .ok_or_else(|| "truncated gRPC message".to_string())?;
    let mut status = 0;
    let mut i = 0;
    while i < msg.len() {
        let (key, n) = varint(&msg[i..])?;
        i += n;
        match key & 7 {
            0 => {
                let (v, n) = varint(&msg[i..])?;
                i += n;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let (l, n) = varint(&msg[i..])?;
                i = i
                    .checked_add(n + l as usize)
                    .filter(|e| *e <= msg.len())
                    .ok_or("truncated field")?;
            }
            1 => i += 8,
            5 => i += 4,
            _ => return Err("invalid protobuf field".into()),
        }
    }
    if i > msg.len() {
        return Err("truncated field".into());
    }
    Ok(status)
}

fn varint(b: &[u8]) -> Result<(u64, usize), String> {
    let mut v: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err("invalid varint".into())
}

fn status_name(s: u64) -> &'static str {
    match s {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "an unknown status",
    }
}

/// One check of an HTTP/2 backend over a connected socket: `grpc`, or `GET endpoint`.
pub async fn check(
    u: &Upstream,
    tcp: tokio::net::TcpStream,
    endpoint: Option<&str>,
) -> Result<(), CheckError> {
    let fail = |m: String| CheckError::Failed(m);
    let mut send = crate::upstream::h2pool::connect::connect_for_check(u, tcp)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let scheme = if u.tls.is_some() { "https" } else { "http" };
    let authority = u.address.to_string();
    let grpc = endpoint.is_none();
    let uri = format!("{scheme}://{authority}{}", endpoint.unwrap_or(PATH));
    let mut req = http::Request::builder()
        .method(if grpc { "POST" } else { "GET" })
        .uri(uri)
        .header("user-agent", "switchyard-health-check");
    if grpc {
        req = req
            .header("content-type", "application/grpc")
            .header("te", "trailers");
    }
    let req = req
        .body(())
        .map_err(|e| fail(format!("health check request: {e}")))?;
    let (resp, mut stream) = send
        .send_request(req, !grpc)
        .map_err(|e| fail(format!("send: {e}")))?;
    if grpc {
        stream
            .send_data(Bytes::from_static(&REQUEST), true)
            .map_err(|e| fail(format!("send: {e}")))?;
    }
    let resp = resp.await.map_err(|e| fail(format!("answer: {e}")))?;
    let status = resp.status();
    if !grpc {
        return if status.is_success() {
            Ok(())
        } else {
            Err(fail(format!("status {}", status.as_u16())))
        };
    }
    if status != http::StatusCode::OK {
        return Err(fail(format!(
            "status {} to a gRPC health check",
            status.as_u16()
        )));
    }
    let head_status = grpc_status(resp.headers());
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while let Some(d) = body.data().await {
        let d = d.map_err(|e| fail(format!("answer body: {e}")))?;
        let _ = body.flow_control().release_capacity(d.len());
        if buf.len() + d.len() > MAX_BODY {
            return Err(fail("gRPC health answer too large".into()));
        }
        buf.extend_from_slice(&d);
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| fail(format!("answer trailers: {e}")))?;
    let code = trailers.as_ref().and_then(grpc_status).or(head_status);
    match code {
        Some(0) => {}
        Some(c) => {
            return Err(fail(format!(
                "grpc-status {c} to grpc.health.v1.Health/Check"
            )))
        }
        None => return Err(fail("no grpc-status in the gRPC health answer".into())),
    }
    let s = serving_status(&buf).map_err(fail)?;
    if s == SERVING {
        Ok(())
    } else {
        Err(fail(format!("gRPC health: {}", status_name(s))))
    }
}

fn grpc_status(h: &http::HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_serving_status() {
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 8, 1]), Ok(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 8, 2]), Ok(2));
        // An empty message: the default, UNKNOWN.
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Ok(0));
        // Unknown fields are skipped (a length-delimited one first).
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 6, 0x12, 2, b'h', b'i', 8, 1]),
            Ok(1)
        );
        assert!(serving_status(&[0, 0, 0, 0, 9, 8, 1]).is_err());
        assert!(serving_status(&[1, 0, 0, 0, 2, 8, 1]).is_err());
        assert!(serving_status(&[0, 0, 0]).is_err());
        assert!(serving_status(&[0, 0, 0, 0, 3, 0x12, 9, 1]).is_err());
        assert!(serving_status(&[0, 0, 0, 0, 2, 8, 0xff]).is_err());
    }
}
