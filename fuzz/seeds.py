#!/usr/bin/env python3
"""Records real clients' traffic as seed inputs under fuzz/corpus/.

dig and kdig (UDP and TCP, with and without EDNS, cookies, DNSSEC OK, AXFR/IXFR, NOTIFY) and
ldapsearch / ldapwhoami / ldappasswd / ldapcompare talk to small listeners here that record what
the client sends (and answer just enough for the client to go on: LDAP results with the request's
message id, an empty DNS reply), then the bytes are written in each target's input format:

  dns_answer       one flag byte (bit 0 TCP, bit 1 may recurse, bit 2 may transfer), the query
  ldap_message     the client's whole byte stream of one connection
  api_json         one byte (type in the low nibble, content type in the high one), the body

Run it from anywhere: `python3 fuzz/seeds.py` (needs dnsutils, knot-dnsutils, ldap-utils).
"""

import hashlib
import os
import socket
import subprocess
import threading

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def save(target, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def dns_seeds():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
    tcp.listen(16)
    got = []

    def reply(q):
        # The header back with QR set and no records: enough for the client to stop.
        if len(q) < 12:
            return q
        return q[:2] + bytes([q[2] | 0x80, 0]) + q[4:6] + b"\0" * 6 + q[12:]

    def serve_udp():
        while True:
            try:
                q, peer = udp.recvfrom(65535)
            except OSError:
                return
            got.append((0, q))
            udp.sendto(reply(q)[:512], peer)

    def serve_tcp():
        while True:
            try:
                c, _ = tcp.accept()
            except OSError:
                return
            with c:
                try:
                    n = int.from_bytes(c.recv(2), "big")
                    q = b""
                    while len(q) < n:
                        part = c.recv(n - len(q))
                        if not part:
                            break
                        q += part
                    got.append((1, q))
                    r = reply(q)
                    c.sendall(len(r).to_bytes(2, "big") + r)
                except OSError:
                    pass

    for f in (serve_udp, serve_tcp):
        threading.Thread(target=f, daemon=True).start()
    names = ["web.lab.internal", "WeB.LaB.InTeRnAl", "_ldap._tcp.lab.internal", "nope.lab.internal",
             "x.apps.lab.internal", "www.lab.internal", "alias.lab.internal", "a.b.sub.lab.internal",
             "2.2.1.10.in-addr.arpa", "lab.internal", "example.org", "big.lab.internal",
             "deep.lab.internal", "loop1.lab.internal", "wc.lab.internal", "v6.lab.internal"]
    types = ["A", "AAAA", "SOA", "NS", "MX", "TXT", "SRV", "PTR", "CNAME", "CAA", "ANY", "TYPE65",
             "HINFO", "DS", "DNSKEY"]
    runs = []
    for i, n in enumerate(names):
        t = types[i % len(types)]
        runs.append(["dig", n, t])
        runs.append(["dig", n, types[(i + 5) % len(types)], "+dnssec", "+bufsize=1232"])
        runs.append(["dig", n, t, "+noedns", "+norec"])
        runs.append(["kdig", n, t, "+tcp"])
    runs += [
        ["dig", "lab.internal", "AXFR"],
        ["dig", "lab.internal", "IXFR=5"],
        ["kdig", "lab.internal", "AXFR"],
        ["dig", "lab.internal", "SOA", "+cookie", "+nsid", "+expire"],
        ["dig", "lab.internal", "SOA", "+edns=1"],
        ["dig", "lab.internal", "SOA", "+opcode=notify"],
        ["dig", "lab.internal", "SOA", "+opcode=update"],
        ["dig", "lab.internal", "SOA", "+opcode=status"],
        ["dig", "-c", "CH", "version.bind", "TXT"],
        ["kdig", "lab.internal", "SOA", "+padding=64", "+tcp"],
        ["kdig", "lab.internal", "SOA", "+subnet=10.1.2.0/24"],
        ["dig", "web.lab.internal", "A", "+ednsopt=100:abcd"],
    ]
    for r in runs:
        tool = r[0]
        args = [tool, "@127.0.0.1", "-p", str(port)] + r[1:]
        args += ["+tries=1", "+time=1"] if tool == "dig" else ["+retry=0", "+time=1"]
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    udp.close()
    tcp.close()
    for tcp_flag, q in got:
        for rights in (0, 2, 4, 6):
            save("dns_answer", bytes([tcp_flag | rights]) + q)
    return len(got)


def read_ber(c):
    head = c.recv(2)
    if len(head) < 2:
        return None
    n = head[1]
    if n & 0x80:
        k = n & 0x7F
        lb = c.recv(k)
        head += lb
        n = int.from_bytes(lb, "big")
    body = b""
    while len(body) < n:
        part = c.recv(n - len(body))
        if not part:
            return None
        body += part
    return head + body


def ldap_result(msgid, tag, extra=b""):
    res = bytes([0x0A, 1, 0, 0x04, 0, 0x04, 0]) + extra
    op = bytes([tag, len(res)]) + res
    mid = msgid.to_bytes(4, "big").lstrip(b"\0") or b"\0"
    if mid[0] & 0x80:
        mid = b"\0" + mid
    inner = bytes([0x02, len(mid)]) + mid + op
    return bytes([0x30, len(inner)]) + inner


def ldap_seeds():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    streams = []

    def conn(c):
        data = b""
        with c:
            c.settimeout(3)
            try:
                while True:
                    m = read_ber(c)
                    if m is None:
                        break
                    data += m
                    # message id, then the operation's tag
                    i = 2 + (m[1] & 0x7F if m[1] & 0x80 else 0)
                    idlen = m[i + 1]
                    msgid = int.from_bytes(m[i + 2:i + 2 + idlen], "big")
                    op = m[i + 2 + idlen]
                    replies = {0x60: 0x61, 0x63: 0x65, 0x77: 0x78, 0x6E: 0x6F, 0x66: 0x67,
                               0x68: 0x69, 0x6C: 0x6D}
                    if op == 0x42:
                        break
                    if op in replies:
                        c.sendall(ldap_result(msgid, replies[op]))
            except (OSError, IndexError):
                pass
        streams.append(data)

    def accept():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=conn, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    url = f"ldap://127.0.0.1:{port}"
    base = "dc=siteward,dc=internal"
    alice = f"uid=alice,ou=people,{base}"
    runs = [
        ["ldapsearch", "-x", "-H", url, "-b", base, "(objectClass=*)"],
        ["ldapsearch", "-x", "-H", url, "-b", base, "-s", "sub", "(&(objectClass=posixAccount)(uid=alice))",
         "cn", "uidNumber", "memberOf"],
        ["ldapsearch", "-x", "-H", url, "-D", alice, "-w", "a", "-b", base,
         "(|(cn=*li*)(mail=bob@example.org)(!(uidNumber>=10003)))"],
        ["ldapsearch", "-x", "-H", url, "-b", "", "-s", "base", "+", "*"],
        ["ldapsearch", "-x", "-H", url, "-b", "cn=Subschema", "-s", "base", "objectClasses"],
        ["ldapsearch", "-x", "-H", url, "-b", base, "-E", "pr=2/noprompt", "(objectClass=posixGroup)"],
        ["ldapsearch", "-x", "-H", url, "-b", base, "-z", "3", "-l", "1", "(memberUid=alice)"],
        ["ldapsearch", "-x", "-H", url, "-b", base,
         "(member:1.2.840.113556.1.4.1941:=uid=alice,ou=people,dc=siteward,dc=internal)"],
        ["ldapsearch", "-x", "-H", url, "-b", base, "(uidNumber:1.2.840.113556.1.4.803:=1)"],
        ["ldapsearch", "-x", "-H", url, "-b", base, "(cn~=alise)", "dn"],
        ["ldapsearch", "-x", "-H", url, "-b", base, "-E", "!sss=cn", "(uid=*)"],
        ["ldapsearch", "-x", "-H", url, "-b", base, "(createTimestamp>=20240101000000Z)"],
        ["ldapwhoami", "-x", "-H", url, "-D", alice, "-w", "a"],
        ["ldappasswd", "-x", "-H", url, "-D", alice, "-w", "a", "-s", "new-password-1"],
        ["ldapcompare", "-x", "-H", url, alice, "uid:alice"],
        ["ldapsearch", "-x", "-H", url, "-Z", "-b", base],
        ["ldapmodify", "-x", "-H", url, "-D", alice, "-w", "a", "-f", "/dev/null"],
    ]
    for r in runs:
        subprocess.run(r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    srv.close()
    for s in streams:
        if s:
            save("ldap_message", s)
    return len(streams)


def api_seeds():
    bodies = [
        (0, b'{"hostname":"web","template":"debian-12","cores":2,"memory_mb":2048,"disk_gb":8,'
            b'"ssh_public_keys":["ssh-ed25519 AAAA me@host"],"environment":{"A":"b"}}'),
        (1, b'{"cores":4,"memory_mb":4096}'),
        (2, b'{"type":"http","container_port":8080,"external_hostname":"app","external_domain_id":1,'
            b'"auth_required":true,"allowed_groups":["devs"]}'),
        (2, b'{"type":"transport","container_port":22,"protocol":"tcp"}'),
        (2, b'{"type":"dns","container_port":389,"service_name":"_ldap._tcp"}'),
        (3, b'{"username":"alice","password":"alice-pw-1","mail":"alice@example.org","given_name":"A"}'),
        (4, b'{"mail":"a@b.example","status":"suspended","ssh_public_keys":[]}'),
        (5, b'{"password":"correct horse battery"}'),
        (6, b'{"cn":"devs","description":"Developers","is_administrator":false}'),
        (7, b'{"username":"bob"}'),
        (8, b'{"name":"lab","internal_domain":"lab.internal","subnet_mask":"255.255.255.0",'
            b'"gateway":"10.1.2.1","dns_forwarders":["1.1.1.1"]}'),
        (9, b'{"name":"pve1","ipv4_address":"10.1.2.2","api_url":"https://pve1:8006",'
            b'"api_token_id_or_username":"root@pam!t","api_secret":"s"}'),
        (10, b'{"domain":"example.org","acme_email":"a@example.org","site_id":1}'),
        (11, b'{"name":"www","type":"CNAME","value":"web","ttl":300}'),
        (12, b'{"mail":"new@example.org"}'),
        (13, b'{"token":"abc","password":"another-pw-1"}'),
        (14, b'{"name":"ci","expires_in_days":30}'),
        (15, b'[1,2.5e3,"\\u00e9",null,true,{"a":{}}]'),
        (3, b'{"username":"x\'; DROP TABLE users; --","password":"12345678"}'),
        (6, b'{"cn":"a"} {"cn":"b"}'),
        (0, b'{"hostname":"../../etc","cores":"2"}'),
    ]
    for kind, body in bodies:
        save("api_json", bytes([kind]) + body)
        save("api_json", bytes([0x10 | kind]) + body)
    return len(bodies)


if __name__ == "__main__":
    print("dns_answer:", dns_seeds(), "queries")
    print("ldap_message:", ldap_seeds(), "connections")
    print("api_json:", api_seeds(), "bodies")
