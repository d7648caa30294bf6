//! Serving the API the way a kind cluster does: HTTPS on 127.0.0.1 with the
//! cluster's own CA, client-certificate authentication for the admin user
//! (as kind's kubeconfigs carry), a bearer token accepted too, 401 for a
//! request with neither; plain HTTP only when asked (`--insecure-http`).

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use base64::Engine as _;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

use super::api::ApiError;

/// Why the API server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Certificate generation failed.
    #[error("cannot create the cluster's certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    /// TLS configuration failed.
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Client verifier construction failed.
    #[error("cannot configure client-certificate verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Binding the listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The cluster's credentials: CA, server certificate, admin client
/// certificate and bearer token, all PEM.
#[derive(Clone)]
pub struct Credentials {
    /// CA certificate.
    pub ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
    /// Admin client certificate.
    pub client_cert_pem: String,
    /// Its key.
    pub client_key_pem: String,
    /// A bearer token the server accepts.
    pub token: String,
}

impl Credentials {
    /// Generates a CA, a server certificate for 127.0.0.1/localhost and an
    /// admin client certificate (CN kubernetes-admin, O system:masters, as kind's).
    pub fn generate() -> Result<Self, ServerError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "rolltest-embedded-ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "rolltest-apiserver");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = server_params.signed_by(&server_key, &ca)?;

        let mut client_params = CertificateParams::new(Vec::<String>::new())?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "kubernetes-admin");
        client_params
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate()?;
        let client_cert = client_params.signed_by(&client_key, &ca)?;

        Ok(Credentials {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            server_der: server_cert.der().clone(),
            server_key_der: server_key.serialize_der(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            token: format!("rolltest-{}", uuid::Uuid::new_v4().simple()),
        })
    }

    fn tls_config(&self) -> Result<ServerConfig, ServerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.server_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone())),
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// A kubeconfig (YAML) for this cluster, kind style: the admin user with
    /// its client certificate (current context), and a second user and
    /// context `NAME-token` with the bearer token.
    pub fn kubeconfig(&self, name: &str, server: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: {name}\ncontexts:\n- context:\n    cluster: {name}\n    namespace: default\n    user: {name}\n  name: {name}\n- context:\n    cluster: {name}\n    namespace: default\n    user: {name}-token\n  name: {name}-token\ncurrent-context: {name}\npreferences: {{}}\nusers:\n- name: {name}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n- name: {name}-token\n  user:\n    token: {token}\n",
            ca = b64(&self.ca_pem),
            cert = b64(&self.client_cert_pem),
            key = b64(&self.client_key_pem),
            token = self.token,
        )
    }
}

/// A running API server.
pub struct ApiServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT` (or `http://` when insecure).
    pub url: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Binds `listen` (port 0 allowed) and serves `router`: over HTTPS with
    /// `credentials`, or plain HTTP without authentication when `None`.
    pub async fn start(
        listen: SocketAddr,
        router: impl FnOnce(String) -> Router,
        credentials: Option<&Credentials>,
    ) -> Result<ApiServer, ServerError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
        let scheme = if credentials.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{addr}");
        let router = router(addr.to_string());
        let tls = match credentials {
            Some(c) => Some((
                TlsAcceptor::from(Arc::new(c.tls_config()?)),
                c.token.clone(),
            )),
            None => None,
        };
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                    _ = stopped.changed() => return,
                };
                let _ = tcp.set_nodelay(true);
                let router = router.clone();
                let tls = tls.clone();
                let mut conn_stopped = stopped.clone();
                tokio::spawn(async move {
                    match tls {
                        Some((acceptor, token)) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let has_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .is_some_and(|c| !c.is_empty());
                            let svc = TowerToHyperService::new(router);
                            let service = service_fn(move |req: hyper::Request<Incoming>| {
                                let authorized = has_cert || bearer_ok(&req, &token);
                                let svc = svc.clone();
                                async move {
                                    if authorized {
                                        hyper::service::Service::call(&svc, req).await
                                    } else {
                                        Ok(axum::response::IntoResponse::into_response(
                                            ApiError::unauthorized(),
                                        ))
                                    }
                                }
                            });
                            let conn = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service);
                            tokio::select! {
                                _ = conn => {}
                                _ = conn_stopped.changed() => {}
                            }
                        }
                        None => {
                            let svc = TowerToHyperService::new(router);
                            let conn =
                                http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
                            tokio::select! {
                                _ = conn => {}
                                _ = conn_stopped.changed() => {}
                            }
                        }
                    }
                });
            }
        });
        Ok(ApiServer {
            addr,
            url,
            stop,
            task,
        })
    }

    /// Stops accepting and closes every connection (watches end).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn bearer_ok(req: &hyper::Request<Incoming>, token: &str) -> bool {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == token)
}
