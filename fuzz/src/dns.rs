//! DNS: the query engine over a zone with every record kind, and transfers/NOTIFY of zones built
//! from arbitrary records.

use std::net::Ipv4Addr;
use std::sync::{Arc, LazyLock};

use arbitrary::{Arbitrary, Unstructured};
use hickory_proto::op::{Message, MessageType, OpCode};
use siteward_dns::engine::{self, Context, Outcome, Query, Transfer, Transport};
use siteward_dns::fixture;
use siteward_dns::transfer::{self, notify_message, AXFR_MESSAGE_MAX};
use siteward_dns::zone::{ZoneIndex, ZoneSettings};
use siteward_store::{ContainerId, DnsService, Naming, ServiceId, SiteId, SiteView};

static INDEX: LazyLock<ZoneIndex> = LazyLock::new(|| {
    let settings = ZoneSettings {
        nameservers: vec!["ns1".into(), "ns2.example.net.".into()],
        nameserver_address: Some(Ipv4Addr::new(10, 1, 2, 53)),
        ..ZoneSettings::default()
    };
    ZoneIndex::build(&fixture::fixture(7), &settings, None)
});

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Checks one response against hickory-proto, an independent decoder: it must parse, and agree
/// with the header we wrote on the id, the response bit, the rcode and the four section counts.
fn check_response(query: &[u8], r: &[u8], size_limit: usize) -> Message {
    assert!(r.len() >= 12, "a response shorter than a header");
    assert!(
        r.len() <= size_limit,
        "{} bytes over the limit {size_limit}",
        r.len()
    );
    let m = match Message::from_vec(r) {
        Ok(m) => m,
        Err(e) => panic!("our response does not parse with hickory-proto: {e}\n{r:02x?}"),
    };
    assert_eq!(m.metadata.message_type, MessageType::Response);
    if query.len() >= 2 {
        assert_eq!(m.metadata.id, u16_at(query, 0), "the id is echoed");
    }
    let counts = [u16_at(r, 4), u16_at(r, 6), u16_at(r, 8), u16_at(r, 10)];
    let theirs = [
        m.queries.len(),
        m.answers.len(),
        m.authorities.len(),
        m.additionals.len() + usize::from(m.edns.is_some()) + usize::from(m.signature.is_some()),
    ];
    assert_eq!(
        counts.map(usize::from),
        theirs,
        "section counts in our header vs hickory's"
    );
    let rcode = u16::from(m.metadata.response_code);
    assert_eq!(rcode & 0xF, u16::from(r[3] & 0xF), "rcode");
    if m.edns.is_none() {
        assert!(rcode <= 0xF, "an extended rcode without OPT");
    }
    m
}

/// `dns_answer`: the first byte chooses transport and rights (UDP/TCP, recursion allowed,
/// transfers allowed), the rest is the query. Every reply parses with hickory-proto and agrees
/// with our header; UDP replies fit the client's limit; a dropped message is one we may drop
/// (shorter than a header, or a response); a reply to a query that hickory reads as one question
/// echoes that question; forwarding and transfers happen only when allowed.
pub fn answer(data: &[u8]) {
    let Some((&flags, msg)) = data.split_first() else {
        return;
    };
    let ctx = Context {
        transport: if flags & 1 == 0 {
            Transport::Udp
        } else {
            Transport::Tcp
        },
        may_recurse: flags & 2 != 0,
        may_transfer: flags & 4 != 0,
    };
    let mut q = Query::default();
    match engine::answer(&INDEX, msg, &ctx, &mut q) {
        Outcome::Reply(r) => {
            let limit = engine::limit(&q, ctx.transport);
            let m = check_response(msg, &r, limit);
            // The same question back, byte for byte (case preserved), when it was readable.
            if let Ok(theirs) = Message::from_vec(msg) {
                if theirs.queries.len() == 1 && m.queries.len() == 1 {
                    assert_eq!(
                        theirs.queries[0].name().to_ascii(),
                        m.queries[0].name().to_ascii()
                    );
                    assert_eq!(theirs.queries[0].query_type(), m.queries[0].query_type());
                }
            }
        }
        Outcome::Drop => {
            assert!(
                msg.len() < 12 || msg[2] & 0x80 != 0,
                "a query dropped without an answer"
            );
        }
        Outcome::Forward(_) => assert!(ctx.may_recurse, "forwarded without the right"),
        Outcome::Transfer(t) => {
            assert!(
                ctx.may_transfer && ctx.transport == Transport::Tcp,
                "a transfer without the right, or over UDP"
            );
            check_transfer(&t);
        }
    }
}

/// The AXFR stream of `t`: every message parses, none is larger than the message limit
/// (unless it holds a single record), the first and the last record are the zone's SOA, and
/// every record of the zone is sent exactly once.
fn check_transfer(t: &Transfer) -> usize {
    let msgs = transfer::messages(t);
    assert!(!msgs.is_empty(), "a transfer with no message");
    let mut records = Vec::new();
    for (i, raw) in msgs.iter().enumerate() {
        let m = match Message::from_vec(raw) {
            Ok(m) => m,
            Err(e) => panic!("AXFR message {i} does not parse with hickory-proto: {e}"),
        };
        assert_eq!(m.metadata.id, t.id);
        assert!(
            raw.len() <= AXFR_MESSAGE_MAX || m.answers.len() == 1,
            "an AXFR message of {} bytes with {} records",
            raw.len(),
            m.answers.len()
        );
        assert_eq!(usize::from(u16_at(raw, 6)), m.answers.len());
        records.extend(m.answers);
    }
    let soa = hickory_proto::rr::RecordType::SOA;
    let serial = t.zone.serial;
    if t.since
        .is_some_and(|s| s == serial || siteward_dns::journal::serial_after(s, serial))
    {
        // The client holds our serial or a newer one: our SOA alone (RFC 1995 §2).
        assert_eq!(
            records.len(),
            1,
            "an IXFR from the current or a newer serial"
        );
        assert_eq!(records.first().map(|r| r.record_type()), Some(soa));
        return 1;
    }
    let expected: usize = t
        .zone
        .rrsets_for_transfer()
        .iter()
        .map(|(_, s)| s.encoded.len())
        .sum();
    assert_eq!(records.len(), expected + 1, "every record once, SOA twice");
    assert_eq!(records.first().map(|r| r.record_type()), Some(soa));
    assert_eq!(records.last().map(|r| r.record_type()), Some(soa));
    records.len()
}

#[derive(Debug, Arbitrary)]
enum Kind {
    A,
    Aaaa,
    Cname,
    Mx,
    Txt,
    Srv,
    Ns,
    Caa,
    Ptr,
    Other(String),
}

#[derive(Debug, Arbitrary)]
struct Record {
    name: String,
    kind: Kind,
    value: String,
    ttl: i32,
}

#[derive(Debug, Arbitrary)]
struct World {
    domain: String,
    serial: i64,
    subnet_bits: u8,
    records: Vec<Record>,
    containers: Vec<(String, Option<u8>)>,
    services: Vec<(u8, String, i32)>,
    nameservers: Vec<String>,
    glue: bool,
}

/// `dns_axfr_notify`: a site from arbitrary rows (domain, static records of every type with any
/// name and presentation value, containers, DNS services, name servers), built into zones; then,
/// per zone, the AXFR stream is checked as in `dns_answer` and the NOTIFY message parses as a
/// NOTIFY for the zone's apex with its SOA. A row the zone builder cannot serve is left out,
/// never a panic or an unparseable record.
pub fn axfr_notify(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(w) = World::arbitrary(&mut u) else {
        return;
    };
    let mut view = SiteView {
        site: fixture::site(1, &w.domain, w.serial),
        nodes: imbl::vector![fixture::node(1, "pve1", fixture::ip(2))],
        containers: imbl::Vector::new(),
        dns_services: imbl::Vector::new(),
        records: imbl::Vector::new(),
    };
    view.site.subnet_mask = match w.subnet_bits % 40 {
        b @ 0..=32 => Some(Ipv4Addr::from(
            u32::MAX.checked_shl(32 - u32::from(b)).unwrap_or(0),
        )),
        _ => None,
    };
    for (i, r) in w.records.iter().enumerate().take(64) {
        let t = match &r.kind {
            Kind::A => "A",
            Kind::Aaaa => "AAAA",
            Kind::Cname => "CNAME",
            Kind::Mx => "MX",
            Kind::Txt => "TXT",
            Kind::Srv => "SRV",
            Kind::Ns => "NS",
            Kind::Caa => "CAA",
            Kind::Ptr => "PTR",
            Kind::Other(s) => s.as_str(),
        };
        view.records.push_back(Arc::new(fixture::rec(
            i as i64 + 1,
            &r.name,
            t,
            &r.value,
            r.ttl,
        )));
    }
    for (i, (host, last)) in w.containers.iter().enumerate().take(32) {
        let ip = last.map(|d| Ipv4Addr::new(10, 1, 2, d));
        view.containers
            .push_back(fixture::container(i as i64 + 1, host, ip));
    }
    for (i, (c, name, port)) in w.services.iter().enumerate().take(16) {
        view.dns_services.push_back(Arc::new(DnsService {
            service_id: ServiceId(i as i64 + 1),
            container_id: ContainerId(i64::from(*c % 34)),
            service_name: name.clone(),
            container_port: *port,
        }));
    }
    let settings = ZoneSettings {
        nameservers: if w.nameservers.is_empty() {
            ZoneSettings::default().nameservers
        } else {
            w.nameservers.iter().take(4).cloned().collect()
        },
        nameserver_address: w.glue.then_some(Ipv4Addr::new(10, 1, 2, 53)),
        ..ZoneSettings::default()
    };
    let mut naming = Naming::default();
    Arc::make_mut(&mut naming.site_by_domain).insert(w.domain.to_ascii_lowercase(), SiteId(1));
    naming.sites.insert(SiteId(1), Arc::new(view));
    let index = ZoneIndex::build(&naming, &settings, None);
    for zone in index.zones.values() {
        let id = u16::from_be_bytes([zone.apex.len() as u8, zone.serial as u8]);
        let mut question = zone.apex.to_vec();
        question.extend_from_slice(&252u16.to_be_bytes());
        question.extend_from_slice(&1u16.to_be_bytes());
        for since in [None, Some(zone.serial), Some(zone.serial.wrapping_sub(1))] {
            check_transfer(&Transfer {
                zone: zone.clone(),
                id,
                question: question.clone(),
                since,
            });
        }
        let n = notify_message(zone, id);
        let m = match Message::from_vec(&n) {
            Ok(m) => m,
            Err(e) => panic!("our NOTIFY does not parse with hickory-proto: {e}"),
        };
        assert_eq!(m.metadata.op_code, OpCode::Notify);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.answers.len(), usize::from(zone.soa().is_some()));
        // And a query for each name the zone holds is answered from it.
        for (name, _) in zone.nodes().into_iter().take(16) {
            let mut msg = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            msg.extend_from_slice(name);
            msg.extend_from_slice(&255u16.to_be_bytes());
            msg.extend_from_slice(&1u16.to_be_bytes());
            let ctx = Context {
                transport: Transport::Tcp,
                may_recurse: false,
                may_transfer: false,
            };
            match engine::answer(&index, &msg, &ctx, &mut Query::default()) {
                Outcome::Reply(r) => {
                    check_response(&msg, &r, 65535);
                }
                other => panic!("a name of the zone was not answered: {other:?}"),
            }
        }
    }
}
