//! The edge NGINX as this server describes it: the configuration rendered for a site
//! ([`nginx`], served by the API's `/sites/{id}/nginx.conf`, which `siteward nginx-sync`
//! fetches) and what the edge itself serves, so no service may take it ([`reserved`]: sign-in
//! hosts and the edge's HTTP(S) ports, checked by the API and registered with the database at
//! start).
//!
//! What does not live here: the endpoints the edge calls (`/auth/verify`, the sign-in pages,
//! in [`crate::auth`]), the HTTP handlers ([`crate::api`]), and writing the file and reloading
//! NGINX (`siteward nginx-sync`, in the binary).

pub mod nginx;
pub mod reserved;
