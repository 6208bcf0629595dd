//! The store's error type. Callers at a protocol edge map it to a result code or status; the
//! `Display` text of [`StoreError::Database`] is for logs only and never reaches a client.

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No row matched.
    #[error("{entity} not found")]
    NotFound {
        /// What was looked for (`user`, `group`, ...).
        entity: &'static str,
    },
    /// A uniqueness or exclusion constraint refused the write.
    #[error("conflict: {what} already exists")]
    Conflict {
        /// Which value conflicts, in the API's terms (`username`, `mail`, ...).
        what: String,
    },
    /// The value names something the edge itself serves (a sign-in host, one of its ports).
    #[error("{field} is reserved: {message}")]
    Reserved {
        /// The offending field (`external_hostname`, `external_port`).
        field: &'static str,
        /// What it is reserved for.
        message: String,
    },
    /// A value broke a rule (a check constraint, a foreign key, a validation in code).
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Encrypting or decrypting a secret failed (wrong key or tampered ciphertext).
    #[error("secret could not be decrypted (wrong key or corrupted data)")]
    Crypto,
    /// Reading or creating the key file failed.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The key file's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Password hashing failed.
    #[error("password hashing failed")]
    Hash,
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database could not be reached (no connection within the pool's timeout, a
    /// connection lost mid-statement, the server shutting down): nothing was written, and the
    /// same request may succeed later.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// Any other database error (protocol, unexpected SQL state).
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl StoreError {
    /// Whether the error says the database is out of reach (worth a 503 and a retry), not that
    /// the request was wrong.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// SQLSTATE classes of a server that is going away or not taking connections: 08 (connection
/// exception), 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now), 53300 (too many
/// connections).
fn unavailable_state(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => return StoreError::NotFound { entity: "row" },
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => return StoreError::Unavailable(err),
            _ => {}
        }
        if err
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| unavailable_state(&code))
        {
            return StoreError::Unavailable(err);
        }
        if let Some(db) = err.as_database_error() {
            let constraint = db.constraint().unwrap_or_default().to_owned();
            if let Some(field) = reserved_field(&constraint) {
                return StoreError::Reserved {
                    field,
                    message: db.message().to_owned(),
                };
            }
            match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => {
                    return StoreError::Conflict {
                        what: conflict_subject(&constraint),
                    };
                }
                sqlx::error::ErrorKind::ForeignKeyViolation => {
                    return StoreError::Invalid {
                        field: constraint,
                        message: "refers to something that does not exist, or is still in use"
                            .into(),
                    };
                }
                sqlx::error::ErrorKind::CheckViolation
                | sqlx::error::ErrorKind::NotNullViolation => {
                    return StoreError::Invalid {
                        field: if constraint.is_empty() {
                            db.message().to_owned()
                        } else {
                            constraint
                        },
                        message: "violates a rule of the data model".into(),
                    };
                }
                _ => {}
            }
            // Deferred integrity triggers (service detail rows) and domain checks (23514 on a
            // domain has no constraint kind mapping in every driver version).
            if let Some(code) = db.code() {
                if code.starts_with("23") {
                    return StoreError::Invalid {
                        field: constraint,
                        message: db.message().to_owned(),
                    };
                }
            }
        }
        StoreError::Database(err)
    }
}

/// The field an edge reservation (migration 0014) guards, by the trigger's constraint name.
fn reserved_field(constraint: &str) -> Option<&'static str> {
    match constraint {
        "http_services_edge_reserved" => Some("external_hostname"),
        "transport_services_edge_reserved_port" => Some("external_port"),
        _ => None,
    }
}

/// Turns a constraint name such as `users_username_key` into the thing that conflicts.
fn conflict_subject(constraint: &str) -> String {
    let known = [
        ("users_username_key", "username"),
        ("users_mail_key", "mail"),
        ("users_pkey", "uid_number"),
        ("groups_cn_key", "group"),
        ("groups_pkey", "gid_number"),
        ("user_groups_pkey", "membership"),
        ("sites_name_key", "site name"),
        ("sites_internal_domain_key", "internal_domain"),
        ("nodes_name_key", "node name"),
        (
            "containers_node_id_container_id_key",
            "container_id on this node",
        ),
        ("containers_site_hostname_key", "hostname in this site"),
        (
            "containers_site_id_mac_address_key",
            "mac_address in this site",
        ),
        (
            "containers_site_id_ipv4_address_key",
            "ipv4_address in this site",
        ),
        (
            "http_services_hostname_domain_key",
            "external_hostname on this domain",
        ),
        (
            "transport_services_protocol_external_port_key",
            "protocol and external_port",
        ),
        ("external_domains_domain_key", "domain"),
        ("api_keys_prefix_key", "api key prefix"),
        ("dns_records_site_id_name_type_value_key", "dns record"),
        // One owner per name in a zone (migration 0012): the field of the table written.
        ("containers_dns_name_key", "hostname"),
        ("nodes_dns_name_key", "name"),
        ("dns_records_dns_name_key", "name"),
        ("dns_services_dns_name_key", "service_name"),
        ("dns_reserved_names_dns_name_key", "name"),
        ("settings_pkey", "setting"),
    ];
    known
        .iter()
        .find(|(name, _)| *name == constraint)
        .map(|(_, what)| (*what).to_owned())
        .unwrap_or_else(|| constraint.to_owned())
}
