//! First-match routing. A request offers a method name and the service names it carries
//! (TTHeader `isn` and ToService, or the `Service:` prefix of a multiplexed method name); a
//! route matches when each of its keys matches.

use crate::config::RouteConfig;

/// What a request offers to the router.
#[derive(Debug, Default)]
pub struct RouteKey<'a> {
    /// Method name without any `Service:` prefix.
    pub method: &'a [u8],
    /// Service names the request carries; a route's `service` matches any of them.
    pub services: [Option<&'a [u8]>; 3],
}

/// Returns the index of the first matching route.
#[inline]
pub fn route(routes: &[RouteConfig], key: &RouteKey<'_>) -> Option<usize> {
    routes.iter().position(|r| matches(r, key))
}

fn matches(r: &RouteConfig, key: &RouteKey<'_>) -> bool {
    if let Some(s) = &r.service {
        if !key.services.iter().flatten().any(|have| *have == s.as_bytes()) {
            return false;
        }
    }
    if let Some(m) = &r.method {
        if key.method != m.as_bytes() {
            return false;
        }
    }
    if let Some(p) = &r.method_prefix {
        if !key.method.starts_with(p.as_bytes()) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(service: Option<&str>, method: Option<&str>, prefix: Option<&str>, cluster: usize) -> RouteConfig {
        RouteConfig {
            name: cluster.to_string(),
            service: service.map(Into::into),
            method: method.map(Into::into),
            method_prefix: prefix.map(Into::into),
            cluster,
        }
    }

    #[test]
    fn first_match_wins_and_catch_all_catches() {
        // Route i goes to cluster i: the index found is the route's.
        let routes = [r(Some("Echo"), Some("ping"), None, 0), r(None, None, Some("get"), 1), r(None, None, None, 2)];
        let key = |m: &'static str, s: Option<&'static str>| RouteKey {
            method: m.as_bytes(),
            services: [s.map(str::as_bytes), None, None],
        };
        assert_eq!(route(&routes, &key("ping", Some("Echo"))), Some(0));
        assert_eq!(route(&routes, &key("ping", Some("Other"))), Some(2));
        assert_eq!(route(&routes, &key("getUser", None)), Some(1));
        assert_eq!(route(&routes, &key("ping", None)), Some(2));
        assert_eq!(route(&routes[..2], &key("put", None)), None);
    }
}
