//! The attribute types and object classes the directory serves, with their OIDs, syntaxes and
//! whether they are operational. Attribute names in requests are resolved here once per request
//! (by name or OID, case-insensitively) into [`Attr`], so the rest of the crate never compares
//! attribute names as strings.
//!
//! `cn=Subschema` is generated from these tables, so what we advertise is what we serve.

/// How values of an attribute compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Directory string, case-insensitive (caseIgnoreMatch).
    CaseIgnore,
    /// Case-sensitive octets (sshPublicKey, octetStringMatch).
    CaseExact,
    /// INTEGER (integerMatch, integerOrderingMatch).
    Integer,
    /// GeneralizedTime (generalizedTimeMatch, generalizedTimeOrderingMatch).
    Time,
    /// Distinguished name (distinguishedNameMatch).
    Dn,
    /// Object identifier or descriptor (objectIdentifierMatch), compared case-insensitively.
    Oid,
}

impl Syntax {
    fn oid(self) -> &'static str {
        match self {
            Syntax::CaseIgnore => "1.3.6.1.4.1.1466.115.121.1.15",
            Syntax::CaseExact => "1.3.6.1.4.1.1466.115.121.1.40",
            Syntax::Integer => "1.3.6.1.4.1.1466.115.121.1.27",
            Syntax::Time => "1.3.6.1.4.1.1466.115.121.1.24",
            Syntax::Dn => "1.3.6.1.4.1.1466.115.121.1.12",
            Syntax::Oid => "1.3.6.1.4.1.1466.115.121.1.38",
        }
    }

    fn matching(self) -> &'static str {
        match self {
            Syntax::CaseIgnore => "EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch",
            Syntax::CaseExact => "EQUALITY octetStringMatch",
            Syntax::Integer => "EQUALITY integerMatch ORDERING integerOrderingMatch",
            Syntax::Time => "EQUALITY generalizedTimeMatch ORDERING generalizedTimeOrderingMatch",
            Syntax::Dn => "EQUALITY distinguishedNameMatch",
            Syntax::Oid => "EQUALITY objectIdentifierMatch",
        }
    }
}

macro_rules! attrs {
    ($($variant:ident = $name:literal, $oid:literal, $syntax:ident, $op:literal, $single:literal;)*) => {
        /// Every attribute type the directory knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(missing_docs)]
        pub enum Attr { $($variant,)* }

        /// Every attribute, in the order entries list them.
        pub const ALL_ATTRS: &[Attr] = &[$(Attr::$variant,)*];

        impl Attr {
            /// The canonical name (as returned to clients).
            pub fn name(self) -> &'static str {
                match self { $(Attr::$variant => $name,)* }
            }
            /// The OID.
            pub fn oid(self) -> &'static str {
                match self { $(Attr::$variant => $oid,)* }
            }
            /// How its values compare.
            pub fn syntax(self) -> Syntax {
                match self { $(Attr::$variant => Syntax::$syntax,)* }
            }
            /// Operational attributes are returned only when asked for by name or with `+`.
            pub fn operational(self) -> bool {
                match self { $(Attr::$variant => $op,)* }
            }
            fn single_valued(self) -> bool {
                match self { $(Attr::$variant => $single,)* }
            }
        }
    };
}

attrs! {
    ObjectClass = "objectClass", "2.5.4.0", Oid, false, false;
    Dc = "dc", "0.9.2342.19200300.100.1.25", CaseIgnore, false, true;
    O = "o", "2.5.4.10", CaseIgnore, false, false;
    Ou = "ou", "2.5.4.11", CaseIgnore, false, false;
    Uid = "uid", "0.9.2342.19200300.100.1.1", CaseIgnore, false, false;
    Cn = "cn", "2.5.4.3", CaseIgnore, false, false;
    Sn = "sn", "2.5.4.4", CaseIgnore, false, false;
    GivenName = "givenName", "2.5.4.42", CaseIgnore, false, false;
    DisplayName = "displayName", "2.16.840.1.113730.3.1.241", CaseIgnore, false, true;
    Mail = "mail", "0.9.2342.19200300.100.1.3", CaseIgnore, false, false;
    UidNumber = "uidNumber", "1.3.6.1.1.1.1.0", Integer, false, true;
    GidNumber = "gidNumber", "1.3.6.1.1.1.1.1", Integer, false, true;
    Gecos = "gecos", "1.3.6.1.1.1.1.2", CaseIgnore, false, true;
    HomeDirectory = "homeDirectory", "1.3.6.1.1.1.1.3", CaseExact, false, true;
    LoginShell = "loginShell", "1.3.6.1.1.1.1.4", CaseExact, false, true;
    ShadowLastChange = "shadowLastChange", "1.3.6.1.1.1.1.5", Integer, false, true;
    ShadowExpire = "shadowExpire", "1.3.6.1.1.1.1.10", Integer, false, true;
    MemberUid = "memberUid", "1.3.6.1.1.1.1.12", CaseIgnore, false, false;
    Member = "member", "2.5.4.31", Dn, false, false;
    Description = "description", "2.5.4.13", CaseIgnore, false, false;
    SshPublicKey = "sshPublicKey", "1.3.6.1.4.1.24552.500.1.1.1.13", CaseExact, false, false;
    MemberOf = "memberOf", "1.2.840.113556.1.2.102", Dn, false, false;
    UserPassword = "userPassword", "2.5.4.35", CaseExact, false, false;
    EntryUuid = "entryUUID", "1.3.6.1.1.16.4", CaseIgnore, true, true;
    EntryDn = "entryDN", "1.3.6.1.1.20", Dn, true, true;
    CreateTimestamp = "createTimestamp", "2.5.18.1", Time, true, true;
    ModifyTimestamp = "modifyTimestamp", "2.5.18.2", Time, true, true;
    PwdChangedTime = "pwdChangedTime", "1.3.6.1.4.1.42.2.27.8.1.16", Time, true, true;
    HasSubordinates = "hasSubordinates", "2.5.18.9", CaseIgnore, true, true;
    StructuralObjectClass = "structuralObjectClass", "2.5.21.9", Oid, true, true;
    SubschemaSubentry = "subschemaSubentry", "2.5.18.10", Dn, true, true;
    NamingContexts = "namingContexts", "1.3.6.1.4.1.1466.101.120.5", Dn, true, false;
    DefaultNamingContext = "defaultNamingContext", "1.2.840.113556.1.4.1426", Dn, true, true;
    SupportedLdapVersion = "supportedLDAPVersion", "1.3.6.1.4.1.1466.101.120.15", Integer, true, false;
    SupportedControl = "supportedControl", "1.3.6.1.4.1.1466.101.120.13", Oid, true, false;
    SupportedExtension = "supportedExtension", "1.3.6.1.4.1.1466.101.120.7", Oid, true, false;
    SupportedFeatures = "supportedFeatures", "1.3.6.1.4.1.4203.1.3.5", Oid, true, false;
    SupportedSaslMechanisms = "supportedSASLMechanisms", "1.3.6.1.4.1.1466.101.120.14", CaseIgnore, true, false;
    VendorName = "vendorName", "1.3.6.1.1.4", CaseIgnore, true, true;
    VendorVersion = "vendorVersion", "1.3.6.1.1.5", CaseIgnore, true, true;
    AttributeTypes = "attributeTypes", "2.5.21.5", CaseIgnore, true, false;
    ObjectClasses = "objectClasses", "2.5.21.6", CaseIgnore, true, false;
    LdapSyntaxes = "ldapSyntaxes", "1.3.6.1.4.1.1466.101.120.16", CaseIgnore, true, false;
}

impl Attr {
    /// Resolves a name or OID, case-insensitively, ignoring attribute options (`cn;lang-en`).
    pub fn parse(text: &str) -> Option<Attr> {
        let base = text.split(';').next().unwrap_or_default().trim();
        ALL_ATTRS.iter().copied().find(|a| {
            a.name().eq_ignore_ascii_case(base)
                || a.oid() == base
                || a.aliases().iter().any(|x| x.eq_ignore_ascii_case(base))
        })
    }

    fn aliases(self) -> &'static [&'static str] {
        match self {
            Attr::Cn => &["commonName"],
            Attr::Sn => &["surname"],
            Attr::GivenName => &["gn"],
            Attr::Uid => &["userid"],
            Attr::Mail => &["rfc822Mailbox"],
            Attr::O => &["organizationName"],
            Attr::Ou => &["organizationalUnitName"],
            Attr::Dc => &["domainComponent"],
            _ => &[],
        }
    }

    /// The RFC 4512 definition published in `cn=Subschema`.
    pub fn definition(self) -> String {
        let usage = if self.operational() {
            " NO-USER-MODIFICATION USAGE directoryOperation"
        } else {
            ""
        };
        let single = if self.single_valued() {
            " SINGLE-VALUE"
        } else {
            ""
        };
        let mut names = vec![self.name()];
        names.extend(self.aliases());
        let names = if names.len() == 1 {
            format!("'{}'", self.name())
        } else {
            format!(
                "( {} )",
                names
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        format!(
            "( {} NAME {} {} SYNTAX {}{}{} )",
            self.oid(),
            names,
            self.syntax().matching(),
            self.syntax().oid(),
            single,
            usage
        )
    }
}

/// The object classes entries carry, with their RFC 4512 definitions.
pub const OBJECT_CLASSES: &[(&str, &str)] = &[
    ("top", "( 2.5.6.0 NAME 'top' ABSTRACT MUST objectClass )"),
    (
        "dcObject",
        "( 1.3.6.1.4.1.1466.344 NAME 'dcObject' SUP top AUXILIARY MUST dc )",
    ),
    (
        "organization",
        "( 2.5.6.4 NAME 'organization' SUP top STRUCTURAL MUST o MAY description )",
    ),
    (
        "organizationalUnit",
        "( 2.5.6.5 NAME 'organizationalUnit' SUP top STRUCTURAL MUST ou MAY description )",
    ),
    (
        "person",
        "( 2.5.6.6 NAME 'person' SUP top STRUCTURAL MUST ( sn $ cn ) MAY ( userPassword $ description ) )",
    ),
    (
        "organizationalPerson",
        "( 2.5.6.7 NAME 'organizationalPerson' SUP person STRUCTURAL )",
    ),
    (
        "inetOrgPerson",
        "( 2.16.840.1.113730.3.2.2 NAME 'inetOrgPerson' SUP organizationalPerson STRUCTURAL MAY ( displayName $ givenName $ mail $ uid ) )",
    ),
    (
        "posixAccount",
        "( 1.3.6.1.1.1.2.0 NAME 'posixAccount' SUP top AUXILIARY MUST ( cn $ uid $ uidNumber $ gidNumber $ homeDirectory ) MAY ( userPassword $ loginShell $ gecos $ description ) )",
    ),
    (
        "shadowAccount",
        "( 1.3.6.1.1.1.2.1 NAME 'shadowAccount' SUP top AUXILIARY MUST uid MAY ( userPassword $ shadowLastChange $ shadowExpire $ description ) )",
    ),
    (
        "ldapPublicKey",
        "( 1.3.6.1.4.1.24552.500.1.1.2.0 NAME 'ldapPublicKey' SUP top AUXILIARY MAY ( sshPublicKey $ uid ) )",
    ),
    (
        "posixGroup",
        "( 1.3.6.1.1.1.2.2 NAME 'posixGroup' SUP top AUXILIARY MUST ( cn $ gidNumber ) MAY ( userPassword $ memberUid $ description ) )",
    ),
    (
        "groupOfNames",
        "( 2.5.6.9 NAME 'groupOfNames' SUP top STRUCTURAL MUST cn MAY ( member $ description ) )",
    ),
    (
        "subschema",
        "( 2.5.20.1 NAME 'subschema' AUXILIARY MAY ( objectClasses $ attributeTypes $ ldapSyntaxes ) )",
    ),
    (
        "extensibleObject",
        "( 1.3.6.1.4.1.1466.101.120.111 NAME 'extensibleObject' SUP top AUXILIARY )",
    ),
];

/// The syntaxes the attribute types use, for `ldapSyntaxes`.
pub fn syntax_definitions() -> Vec<String> {
    [
        (Syntax::CaseIgnore, "Directory String"),
        (Syntax::CaseExact, "Octet String"),
        (Syntax::Integer, "INTEGER"),
        (Syntax::Time, "Generalized Time"),
        (Syntax::Dn, "DN"),
        (Syntax::Oid, "OID"),
    ]
    .iter()
    .map(|(s, desc)| format!("( {} DESC '{desc}' )", s.oid()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_oids_resolve_case_insensitively() {
        assert_eq!(Attr::parse("UID"), Some(Attr::Uid));
        assert_eq!(Attr::parse("0.9.2342.19200300.100.1.1"), Some(Attr::Uid));
        assert_eq!(Attr::parse("commonName"), Some(Attr::Cn));
        assert_eq!(Attr::parse("cn;lang-en"), Some(Attr::Cn));
        assert_eq!(Attr::parse("memberof"), Some(Attr::MemberOf));
        assert_eq!(Attr::parse("bogus"), None);
    }

    #[test]
    fn definitions_are_well_formed() {
        for a in ALL_ATTRS {
            let d = a.definition();
            assert!(d.starts_with("( ") && d.ends_with(" )"), "{d}");
            assert!(d.contains(a.oid()), "{d}");
        }
        assert!(Attr::EntryUuid.definition().contains("directoryOperation"));
        assert!(!Attr::Uid.definition().contains("directoryOperation"));
    }
}
