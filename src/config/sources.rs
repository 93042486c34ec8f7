//! `listener.allow_sources` as the config writes it: a list of CIDRs, parsed and checked when
//! the config is loaded. The set they make, and the `allow_sources_file` parser, are
//! `policy::sources`.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::error::ConfigError;

/// One CIDR (`203.0.113.0/24`, `2001:db8::/32`) or bare address (a /32 or /128).
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("is empty".to_owned());
    }
    if !t.contains('/') {
        return t.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            format!(
                "{t:?} is not an IP address or CIDR, e.g. \"203.0.113.0/24\" or \"2001:db8::/32\""
            )
        });
    }
    let net: IpNet = t.parse().map_err(|_| {
        format!("{t:?} is not a CIDR, e.g. \"203.0.113.0/24\" or \"2001:db8::/32\"")
    })?;
    // Security: `203.0.113.7/16` is either a typo in the address or in the length, and
    // guessing either way could open the listener to a whole /16 the operator never meant.
    if net.trunc() != net {
        let host = IpNet::from(net.addr());
        return Err(format!(
            "{t:?} has bits set past its prefix length; write {} for the whole network, or {host} for the one address",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Parses `listener.allow_sources` of the config file `config`. `list` is `None` when the
/// key is absent (and the result then too); `file_given` tells whether
/// `listener.allow_sources_file` is set, without which an empty list is refused.
pub fn parse_allow_sources(
    list: Option<&[String]>,
    file_given: bool,
    config: &Path,
) -> Result<Option<Vec<IpNet>>, ConfigError> {
    let Some(list) = list else { return Ok(None) };
    let invalid = |key: String, message: String| ConfigError::Invalid {
        path: config.to_owned(),
        key,
        message,
    };
    if list.is_empty() && !file_given {
        return Err(invalid(
            "listener.allow_sources".to_owned(),
            "is empty, which would refuse every connection; list the networks that may connect, or remove the key to allow every source".to_owned(),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            parse_cidr(entry).map_err(|m| invalid(format!("listener.allow_sources[{i}]"), m))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}
