//! The load generator's side of `wss://`: a rustls client configuration
//! that trusts a given CA (`--tls-ca`), or, when asked in so many words
//! (`--tls-insecure`), any certificate at all, still checking the
//! handshake's signatures so the session is a real one.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How a load process speaks TLS: its configuration and the name it asks
/// the server for (SNI, and what the certificate must be for).
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// Shared by every connection of the process.
    pub config: Arc<ClientConfig>,
    /// From the `--url` host.
    pub server_name: ServerName<'static>,
}

/// Builds the client side for `host` (a name or an address, without the
/// port): trusting the CA certificates in `ca`, or (`insecure`) anything.
pub fn client(host: &str, ca: Option<&Path>, insecure: bool) -> Result<TlsClient, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = match (ca, insecure) {
        (Some(ca), _) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|items| items.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("--tls-ca {}: no CA certificate in it", ca.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        (None, false) => {
            return Err("a wss:// --url needs --tls-ca FILE (the CA that signed the server's certificate) \
                        or --tls-insecure"
                .into())
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Thousands of connections to one server: no resumption cache to grow.
    config.resumption = rustls::client::Resumption::disabled();
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|e| format!("--url host '{host}': not a server name: {e}"))?;
    Ok(TlsClient { config: Arc::new(config), server_name })
}

/// `--tls-insecure`: accepts whatever certificate the server shows, but
/// still verifies that the server holds its key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The failure label of a TLS error during the run.
pub fn failure_reason(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(_) => "tls_certificate",
        rustls::Error::AlertReceived(_) => "tls_alert",
        _ => "tls_error",
    }
}
