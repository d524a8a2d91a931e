//! Apache THeader through ringway between PyPI `thrift` peers (client and server), binary and
//! compact payloads. Needs `pip install -r tests/py/requirements.txt` (scripts/test.sh does it).

mod common;

use common::{cluster, python_theader_client, python_theader_server, Proxy};

both_drivers! {
    fn python_theader_binary_and_compact_through_the_proxy(driver: &str) {
        let (_server, port) = python_theader_server("binary");
        let proxy = Proxy::start(driver, r#"{ method = "echo", cluster = "py" }"#,
            &cluster("py", &[format!("127.0.0.1:{port}")], "max_connections_per_endpoint = 2"));
        for protocol in ["binary", "compact"] {
            let v = python_theader_client(proxy.addr.port(), protocol, 8, 40, "echo");
            assert!(v.no_errors, "{protocol}: {}", v.raw);
            assert_eq!(v.ok, 8 * 40, "{protocol}: {}", v.raw);
            assert_eq!(v.exceptions, 0, "{}", v.raw);
        }
        // No route: the Python client receives a THeader EXCEPTION it can parse, with its seqID.
        let v = python_theader_client(proxy.addr.port(), "compact", 2, 3, "missing");
        assert!(v.no_errors, "{}", v.raw);
        assert_eq!(v.exceptions, 6, "{}", v.raw);
        assert!(v.raw.contains("\"type\": 1") && v.raw.contains("\"seq_ok\": true") && !v.raw.contains("\"seq_ok\": false"), "{}", v.raw);
    }
}
