//! A hand-built site for tests and fuzz targets (feature `fuzzing`): every record kind the
//! zones serve, wildcards, CNAME chains and loops, a delegation with glue, SRV records of DNS
//! services, and an RRset too large for plain UDP.
#![allow(missing_docs)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use siteward_store::{
    Container, ContainerId, DnsRecord, DnsRecordId, DnsService, Naming, Node, NodeId, ServiceId,
    Site, SiteId, SiteView,
};

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

pub fn site(id: i64, domain: &str, serial: i64) -> Site {
    Site {
        id: SiteId(id),
        name: format!("site{id}"),
        internal_domain: domain.into(),
        dhcp_range: None,
        subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        gateway: Some(Ipv4Addr::new(10, 1, 2, 1)),
        dns_forwarders: Vec::new(),
        external_ip: None,
        dns_serial: serial,
        created_at: now(),
        updated_at: now(),
    }
}

pub fn node(id: i64, name: &str, ip: Option<Ipv4Addr>) -> Arc<Node> {
    Arc::new(Node {
        id: NodeId(id),
        name: name.into(),
        ipv4_address: ip,
        api_url: None,
        api_token_id_or_username: None,
        has_secret: false,
        disable_tls_verification: false,
        image_storage: "local".into(),
        volume_storage: "local-lvm".into(),
        network_bridge: "vmbr0".into(),
        nvidia_available: false,
        site_id: SiteId(1),
        created_at: now(),
        updated_at: now(),
    })
}

pub fn container(id: i64, host: &str, ip: Option<Ipv4Addr>) -> Arc<Container> {
    Arc::new(Container {
        id: ContainerId(id),
        hostname: host.into(),
        username: None,
        status: siteward_store::ContainerStatus::Running,
        template: None,
        creation_job_id: None,
        node_id: NodeId(1),
        site_id: SiteId(1),
        container_id: Some(100 + id as i32),
        mac_address: None,
        ipv4_address: ip,
        ai_container: None,
        nvidia_requested: false,
        created_at: now(),
        updated_at: now(),
    })
}

pub fn rec(id: i64, name: &str, t: &str, value: &str, ttl: i32) -> DnsRecord {
    DnsRecord {
        id: DnsRecordId(id),
        site_id: SiteId(1),
        name: name.into(),
        rtype: t.into(),
        value: value.into(),
        ttl,
    }
}

/// 10.1.2.`d`.
pub fn ip(d: u8) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::new(10, 1, 2, d))
}

pub fn fixture(serial: i64) -> Naming {
    let mut records = vec![
        rec(1, "www", "CNAME", "web", 300),
        rec(2, "alias", "CNAME", "www.lab.internal.", 300),
        rec(3, "out", "CNAME", "example.org.", 300),
        rec(4, "*.apps", "A", "10.1.2.99", 300),
        rec(5, "host.apps", "A", "10.1.2.98", 300),
        rec(6, "x.y.deep", "TXT", "\"deep\"", 300),
        rec(7, "_acme-challenge", "TXT", "\"token-one\"", 120),
        rec(8, "_acme-challenge", "TXT", "\"token-two\"", 120),
        rec(9, "@", "MX", "10 mail", 300),
        rec(10, "mail", "A", "10.1.2.30", 300),
        rec(11, "sub", "NS", "ns.sub", 300),
        rec(12, "ns.sub", "A", "10.1.2.40", 300),
        rec(13, "loop1", "CNAME", "loop2", 300),
        rec(14, "loop2", "CNAME", "loop1", 300),
        rec(15, "@", "CAA", "0 issue \"letsencrypt.org\"", 300),
        rec(16, "v6", "AAAA", "2001:db8::1", 300),
        rec(17, "wc", "CNAME", "x.apps", 300),
        rec(18, "bad", "MX", "not a number", 300),
    ];
    for i in 0..40 {
        records.push(rec(
            100 + i,
            "big",
            "TXT",
            &format!("\"{}\"", "x".repeat(40 + i as usize)),
            300,
        ));
    }
    let view = SiteView {
        site: site(1, "lab.internal", serial),
        nodes: imbl::vector![node(1, "pve1", ip(2)), node(2, "pve2", None)],
        containers: imbl::vector![
            container(1, "web", ip(10)),
            container(2, "db", ip(11)),
            container(3, "noip", None),
            container(4, "ldap1", ip(20)),
            container(5, "ldap2", ip(21)),
        ],
        dns_services: imbl::vector![
            DnsService {
                service_id: ServiceId(1),
                container_id: ContainerId(4),
                service_name: "_ldap._tcp".into(),
                container_port: 389,
            },
            DnsService {
                service_id: ServiceId(2),
                container_id: ContainerId(5),
                service_name: "_ldap._tcp".into(),
                container_port: 389,
            },
        ]
        .into_iter()
        .map(Arc::new)
        .collect(),
        records: records.into_iter().map(Arc::new).collect(),
    };
    let mut naming = Naming::default();
    Arc::make_mut(&mut naming.site_by_domain).insert("lab.internal".into(), SiteId(1));
    naming.sites.insert(SiteId(1), Arc::new(view));
    naming
}

/// A query: `name` (any case), `qtype`, optional EDNS (payload, version).
pub fn query(name: &str, qtype: u16, edns: Option<(u16, u8)>) -> Vec<u8> {
    let mut m = vec![
        0x12,
        0x34,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(edns.is_some()),
    ];
    for label in name.trim_end_matches('.').split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if let Some((payload, version)) = edns {
        m.push(0);
        m.extend_from_slice(&crate::rdata::rtype::OPT.to_be_bytes());
        m.extend_from_slice(&payload.to_be_bytes());
        m.extend_from_slice(&[0, version, 0, 0, 0, 0]);
    }
    m
}
