//! The edge's settings: the listeners, what one client may hold, and how the client address is
//! found behind trusted proxies (issue 19, findings 6, 7 and 11).

use std::{net::SocketAddr, time::Duration};

use keel_http::client::{ClientAddrPolicy, ForwardedHeader};

use super::{
    ConfigError, RawConfig, err,
    settings::{cidr_list, positive},
};
use crate::serve::ConnectionLimits;

/// `KEEL_METRICS_LISTEN`: an address:port other than the API's.
pub(super) fn metrics_listen(
    raw: Option<&str>,
    api: SocketAddr,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let addr: SocketAddr = raw.parse().map_err(|_| {
        err(
            "KEEL_METRICS_LISTEN",
            format!(
                "`{}` is not an address:port such as 127.0.0.1:9100",
                raw.chars().take(64).collect::<String>()
            ),
        )
    })?;
    if addr == api && addr.port() != 0 {
        return Err(err(
            "KEEL_METRICS_LISTEN",
            "must differ from KEEL_LISTEN (it is a listener of its own)",
        ));
    }
    Ok(Some(addr))
}

pub(super) fn connection_limits(raw: &RawConfig) -> Result<ConnectionLimits, ConfigError> {
    Ok(ConnectionLimits {
        header_read_timeout: Duration::from_millis(positive(
            "KEEL_HEADER_READ_TIMEOUT_MS",
            raw.header_read_timeout_ms,
        )?),
        idle_timeout: Duration::from_millis(positive("KEEL_IDLE_TIMEOUT_MS", raw.idle_timeout_ms)?),
        max_connections: usize::try_from(positive(
            "KEEL_MAX_CONNECTIONS",
            u64::from(raw.max_connections),
        )?)
        .map_err(|_| err("KEEL_MAX_CONNECTIONS", "too large for this platform"))?,
        max_per_address: usize::try_from(positive(
            "KEEL_MAX_CONNECTIONS_PER_ADDRESS",
            u64::from(raw.max_connections_per_address),
        )?)
        .map_err(|_| {
            err(
                "KEEL_MAX_CONNECTIONS_PER_ADDRESS",
                "too large for this platform",
            )
        })?,
    })
}

pub(super) fn client_addr(raw: &RawConfig) -> Result<ClientAddrPolicy, ConfigError> {
    let trusted_proxies = cidr_list(
        "KEEL_TRUSTED_PROXIES",
        &raw.trusted_proxies,
        "`10.0.0.0/8,fd00::/8`",
    )?;
    let header = match raw.forwarded_header.trim().to_ascii_lowercase().as_str() {
        "x-forwarded-for" => ForwardedHeader::XForwardedFor,
        "forwarded" => ForwardedHeader::Forwarded,
        _ => {
            return Err(err(
                "KEEL_FORWARDED_HEADER",
                "must be `x-forwarded-for` or `forwarded`",
            ));
        }
    };
    Ok(ClientAddrPolicy {
        trusted_proxies,
        header,
    })
}

/// The configuration name of a forwarding header.
pub(super) const fn header_name(h: ForwardedHeader) -> &'static str {
    match h {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    }
}
