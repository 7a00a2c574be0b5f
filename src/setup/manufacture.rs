//! The manufacturing sequences (manufacturing.md §1.1 for TPM 2, §1.8 for TPM 1.2),
//! run against a started provisioning daemon.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rsa::BoxedUint;

use crate::localca::profile::{self, EccCurve, PublicKey};
use crate::tpm::{TPM2_SU_CLEAR, tpm2_shutdown_command};

use super::SetupLog;
use super::certs::{CertError, CertInput, CertType, CertificateMaker, TpmInfo};
use super::daemon::{DaemonError, RunningTpm};
use super::tpm2::{self, EkKind, PcrBank, PublicArea};
use super::tpm12;

/// CMD_GET_INFO: TPM specification and TPM attributes.
const INFO_SPEC_AND_ATTRIBUTES: u64 = 0x3;

#[derive(Debug, thiserror::Error)]
pub enum ManufactureError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("the TPM returned an unusable {what}: {reason}")]
    BadKey { what: &'static str, reason: String },
    #[error("the TPM's CMD_GET_INFO answer lacks the TPM specification or attributes")]
    BadInfo,
    #[error(
        "no PCR banks could be activated: the TPM offers {offered}, none of the requested {wanted}"
    )]
    NoPcrBanks { wanted: String, offered: String },
    #[error(
        "'{0}' is not a PCR bank name (sha1, sha256, sha384, sha512, sm3-256, sha3-256, sha3-384, sha3-512)"
    )]
    UnknownBank(String),
    #[error("cannot write the EK certificate file {}", path.display())]
    CertFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the {0} is too large for an NV index")]
    TooLarge(&'static str),
    #[error("encrypting the TPM 1.2 {what} to the EK failed: {reason}")]
    Encrypt { what: &'static str, reason: String },
}

type Result<T> = std::result::Result<T, ManufactureError>;

/// The TPM 2 part of the command line.
pub struct Tpm2Plan<'a> {
    pub create_ek: bool,
    pub allow_signing: bool,
    pub decryption: bool,
    pub create_spk: bool,
    pub ecc_spk: bool,
    pub ek_cert: bool,
    pub platform_cert: bool,
    pub lock_nvram: bool,
    pub rsa_bits: u32,
    /// Banks to activate; `None` leaves the allocation alone (`--pcr-banks -`).
    pub pcr_banks: Option<Vec<String>>,
    pub write_ek_cert_files: Option<&'a Path>,
    pub vmid: Option<&'a str>,
}

/// What a run made, for `--display`.
#[derive(Default)]
pub struct Made {
    pub handles: Vec<(u32, String)>,
    pub nv_indices: Vec<(u32, String)>,
}

pub fn manufacture_tpm2(
    tpm: &mut RunningTpm,
    plan: &Tpm2Plan,
    certs: Option<&CertificateMaker>,
    log: &mut SetupLog,
) -> Result<Made> {
    let mut made = Made::default();
    if plan.create_spk {
        let template = tpm2::spk_template(plan.ecc_spk, plan.rsa_bits as u16);
        let created = create_primary(tpm, tpm2::RH_OWNER, &template, "storage primary key")?;
        persist(tpm, created.handle, tpm2::SPK_HANDLE)?;
        log.info(&format!(
            "Created the storage primary key with handle {:#x}.",
            tpm2::SPK_HANDLE
        ));
        made.handles
            .push((tpm2::SPK_HANDLE, "storage primary key".into()));
    }
    if plan.create_ek {
        let rsa_kind = if plan.rsa_bits == 3072 {
            EkKind::Rsa3072
        } else {
            EkKind::Rsa2048
        };
        let mut info: Option<TpmInfo> = None;
        for kind in [rsa_kind, EkKind::EccP384] {
            let key = create_ek(tpm, kind, plan, log, &mut made)?;
            let wants_platform = plan.platform_cert && kind == rsa_kind;
            if !plan.ek_cert && !wants_platform {
                continue;
            }
            let Some(certs) = certs else { continue };
            if info.is_none() {
                info = Some(tpm_info(tpm)?);
            }
            let info = info.as_ref().ok_or(ManufactureError::BadInfo)?;
            let input = |cert_type| CertInput {
                cert_type,
                key: &key,
                tpm2: true,
                info,
                vmid: plan.vmid,
                allow_signing: plan.allow_signing,
                decryption: plan.decryption,
            };
            // Both certificates are made before either is written, as swtpm_setup does.
            let ek_cert = match plan.ek_cert {
                true => Some(certs.make(&input(CertType::Ek), log)?),
                false => None,
            };
            let platform_cert = match plan.platform_cert && kind == rsa_kind {
                true => Some(certs.make(&input(CertType::Platform), log)?),
                false => None,
            };
            if let Some(cert) = ek_cert {
                if let Some(dir) = plan.write_ek_cert_files {
                    write_cert_file(dir, kind.name(), &cert)?;
                }
                let what = format!("{} EK certificate", kind.description());
                write_nv(
                    tpm,
                    kind.cert_index(),
                    &cert,
                    plan.lock_nvram,
                    &what,
                    log,
                    &mut made,
                )?;
            }
            if let Some(cert) = platform_cert {
                write_nv(
                    tpm,
                    tpm2::PLATFORM_CERT_INDEX,
                    &cert,
                    plan.lock_nvram,
                    "platform certificate",
                    log,
                    &mut made,
                )?;
            }
        }
    }
    if let Some(banks) = &plan.pcr_banks {
        activate_pcr_banks(tpm, banks, log)?;
    }
    tpm.transmit(&tpm2_shutdown_command(TPM2_SU_CLEAR), "TPM2_Shutdown")?;
    Ok(made)
}

/// `--reconfigure`: only the PCR banks change.
pub fn reconfigure_tpm2(
    tpm: &mut RunningTpm,
    banks: Option<&[String]>,
    log: &mut SetupLog,
) -> Result<()> {
    if let Some(banks) = banks {
        activate_pcr_banks(tpm, banks, log)?;
    }
    tpm.transmit(&tpm2_shutdown_command(TPM2_SU_CLEAR), "TPM2_Shutdown")?;
    Ok(())
}

fn tpm_info(tpm: &mut RunningTpm) -> Result<TpmInfo> {
    TpmInfo::from_json(&tpm.info(INFO_SPEC_AND_ATTRIBUTES)?).ok_or(ManufactureError::BadInfo)
}

fn create_primary(
    tpm: &mut RunningTpm,
    hierarchy: u32,
    template: &[u8],
    what: &'static str,
) -> Result<tpm2::CreatedPrimary> {
    let response = tpm.transmit(
        &tpm2::create_primary(hierarchy, template),
        "TPM2_CreatePrimary",
    )?;
    tpm2::parse_create_primary(&response).ok_or(ManufactureError::BadKey {
        what,
        reason: "the CreatePrimary response cannot be parsed".into(),
    })
}

/// Makes the object persistent and unloads the transient copy.
fn persist(tpm: &mut RunningTpm, transient: u32, persistent: u32) -> Result<()> {
    tpm.transmit(
        &tpm2::evict_control(transient, persistent),
        "TPM2_EvictControl",
    )?;
    tpm.transmit(&tpm2::flush_context(transient), "TPM2_FlushContext")?;
    Ok(())
}

fn create_ek(
    tpm: &mut RunningTpm,
    kind: EkKind,
    plan: &Tpm2Plan,
    log: &mut SetupLog,
    made: &mut Made,
) -> Result<PublicKey> {
    let template = tpm2::ek_template(kind, plan.allow_signing, plan.decryption);
    let created = create_primary(tpm, tpm2::RH_ENDORSEMENT, &template, "EK")?;
    let key = ek_public_key(kind, created.key)?;
    persist(tpm, created.handle, kind.persistent_handle())?;
    log.info(&format!(
        "Created the {} EK with handle {:#x}.",
        kind.description(),
        kind.persistent_handle()
    ));
    made.handles.push((
        kind.persistent_handle(),
        format!("{} EK", kind.description()),
    ));
    if plan.allow_signing {
        let what = format!("{} EK template", kind.description());
        write_nv(
            tpm,
            kind.template_index(),
            &template,
            plan.lock_nvram,
            &what,
            log,
            made,
        )?;
    }
    Ok(key)
}

/// Checks the EK the TPM made and turns it into the certificate's key.
fn ek_public_key(kind: EkKind, area: PublicArea) -> Result<PublicKey> {
    let bad = |reason: String| ManufactureError::BadKey { what: "EK", reason };
    match (kind, area) {
        (EkKind::Rsa2048 | EkKind::Rsa3072, PublicArea::Rsa { modulus, exponent }) => {
            let bytes = if kind == EkKind::Rsa2048 { 256 } else { 384 };
            if modulus.len() != bytes {
                return Err(bad(format!(
                    "an RSA modulus of {} bytes instead of {bytes}",
                    modulus.len()
                )));
            }
            Ok(PublicKey::Rsa { modulus, exponent })
        }
        (EkKind::EccP384, PublicArea::Ecc { curve, x, y }) => {
            if curve != tpm2::ECC_NIST_P384 || x.len() != 48 || y.len() != 48 {
                return Err(bad(format!(
                    "an ECC key on curve {curve:#x} with {}/{} byte coordinates instead of P-384's 48",
                    x.len(),
                    y.len()
                )));
            }
            Ok(PublicKey::Ecc {
                curve: EccCurve::P384,
                x,
                y,
            })
        }
        (_, PublicArea::Rsa { .. }) => Err(bad("an RSA key instead of an ECC key".into())),
        (_, PublicArea::Ecc { .. }) => Err(bad("an ECC key instead of an RSA key".into())),
    }
}

fn write_nv(
    tpm: &mut RunningTpm,
    index: u32,
    data: &[u8],
    lock: bool,
    what: &str,
    log: &mut SetupLog,
    made: &mut Made,
) -> Result<()> {
    let size = u16::try_from(data.len()).map_err(|_| ManufactureError::TooLarge("NV content"))?;
    tpm.transmit(
        &tpm2::nv_define_space(index, tpm2::NV_CERT_ATTRIBUTES, size),
        "TPM2_NV_DefineSpace",
    )?;
    for write in tpm2::nv_writes(index, data) {
        tpm.transmit(&write, "TPM2_NV_Write")?;
    }
    if lock {
        tpm.transmit(&tpm2::nv_write_lock(index), "TPM2_NV_WriteLock")?;
    }
    log.info(&format!("Stored the {what} in NV index {index:#x}."));
    made.nv_indices.push((index, what.to_string()));
    Ok(())
}

fn write_cert_file(dir: &Path, key_name: &str, cert: &[u8]) -> Result<()> {
    let path = dir.join(format!("ek-{key_name}.crt"));
    let write = || -> io::Result<()> {
        use std::io::Write;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&path)?;
        file.write_all(cert)
    };
    write().map_err(|source| ManufactureError::CertFile {
        path: path.clone(),
        source,
    })
}

fn activate_pcr_banks(tpm: &mut RunningTpm, names: &[String], log: &mut SetupLog) -> Result<()> {
    let wanted = names
        .iter()
        .map(|name| {
            tpm2::bank_by_name(name).ok_or_else(|| ManufactureError::UnknownBank(name.clone()))
        })
        .collect::<Result<Vec<u16>>>()?;
    let response = tpm.transmit(&tpm2::get_capability_pcrs(), "TPM2_GetCapability")?;
    let offered: Vec<PcrBank> =
        tpm2::parse_pcr_banks(&response).ok_or(DaemonError::BadResponse {
            command: "TPM2_GetCapability",
        })?;
    let offered_names = offered
        .iter()
        .map(|bank| tpm2::bank_name(bank.hash_alg))
        .collect::<Vec<_>>()
        .join(",");
    let allocation =
        tpm2::allocation(&offered, &wanted).ok_or_else(|| ManufactureError::NoPcrBanks {
            wanted: names.join(","),
            offered: offered_names.clone(),
        })?;
    tpm.transmit(&tpm2::pcr_allocate(&allocation), "TPM2_PCR_Allocate")?;
    let active = allocation
        .iter()
        .filter(|bank| bank.select.iter().any(|b| *b != 0))
        .map(|bank| tpm2::bank_name(bank.hash_alg))
        .collect::<Vec<_>>()
        .join(",");
    log.info(&format!(
        "Activated the PCR banks {active} of {offered_names} (in effect from the TPM's next start)."
    ));
    Ok(())
}

/// The TPM 1.2 part of the command line.
pub struct Tpm12Plan<'a> {
    pub create_ek: bool,
    pub take_ownership: bool,
    pub owner_password: &'a [u8],
    pub srk_password: &'a [u8],
    pub ek_cert: bool,
    pub platform_cert: bool,
    pub lock_nvram: bool,
    pub write_ek_cert_files: Option<&'a Path>,
    pub vmid: Option<&'a str>,
}

pub fn manufacture_tpm12(
    tpm: &mut RunningTpm,
    plan: &Tpm12Plan,
    certs: Option<&CertificateMaker>,
    log: &mut SetupLog,
) -> Result<Made> {
    let mut made = Made::default();
    tpm.transmit(
        &tpm12::physical_presence(tpm12::PHYSICAL_PRESENCE_CMD_ENABLE),
        "TSC_PhysicalPresence",
    )?;
    tpm.transmit(
        &tpm12::physical_presence(tpm12::PHYSICAL_PRESENCE_PRESENT),
        "TSC_PhysicalPresence",
    )?;
    tpm.transmit(&tpm12::physical_enable(), "TPM_PhysicalEnable")?;
    tpm.transmit(
        &tpm12::physical_set_deactivated(false),
        "TPM_PhysicalSetDeactivated",
    )?;
    let mut ek = None;
    if plan.create_ek {
        let response = tpm.transmit(
            &tpm12::create_endorsement_key_pair(),
            "TPM_CreateEndorsementKeyPair",
        )?;
        let modulus = tpm12::parse_endorsement_key(&response)
            .filter(|m| m.len() == 256)
            .ok_or(ManufactureError::BadKey {
                what: "EK",
                reason: "the TPM_CreateEndorsementKeyPair response holds no 2048-bit modulus"
                    .into(),
            })?;
        log.info("Created the TPM 1.2 EK.");
        ek = Some(PublicKey::Rsa {
            modulus,
            exponent: 65537,
        });
    }
    if plan.take_ownership
        && let Some(PublicKey::Rsa { modulus, .. }) = &ek
    {
        take_ownership(tpm, modulus, plan)?;
        log.info("Took ownership of the TPM 1.2.");
    }
    if let (true, Some(key), Some(certs)) = (plan.ek_cert, &ek, certs) {
        let info = tpm_info(tpm)?;
        let input = |cert_type| CertInput {
            cert_type,
            key,
            tpm2: false,
            info: &info,
            vmid: plan.vmid,
            allow_signing: false,
            decryption: false,
        };
        let ek_blob = certs.make(&input(CertType::Ek), log)?;
        let platform_blob = match plan.platform_cert {
            true => Some(certs.make(&input(CertType::Platform), log)?),
            false => None,
        };
        if let Some(dir) = plan.write_ek_cert_files {
            let der = profile::strip_tpm12_header(&ek_blob).unwrap_or(&ek_blob);
            write_cert_file(dir, "rsa2048", der)?;
        }
        write_nv12(
            tpm,
            tpm12::EK_CERT_INDEX,
            &ek_blob,
            "EK certificate",
            log,
            &mut made,
        )?;
        if let Some(blob) = platform_blob {
            write_nv12(
                tpm,
                tpm12::PLATFORM_CERT_INDEX,
                &blob,
                "platform certificate",
                log,
                &mut made,
            )?;
        }
    }
    if plan.lock_nvram {
        tpm.transmit(&tpm12::nv_lock(), "TPM_NV_DefineSpace")?;
        log.info("Locked the TPM 1.2's NV space.");
    }
    Ok(made)
}

fn write_nv12(
    tpm: &mut RunningTpm,
    index: u32,
    blob: &[u8],
    what: &str,
    log: &mut SetupLog,
    made: &mut Made,
) -> Result<()> {
    tpm.transmit(
        &tpm12::nv_define_cert_space(index, blob.len() as u32),
        "TPM_NV_DefineSpace",
    )?;
    tpm.transmit(&tpm12::nv_write_value(index, blob), "TPM_NV_WriteValue")?;
    log.info(&format!("Stored the {what} in NV index {index:#x}."));
    made.nv_indices.push((index, what.to_string()));
    Ok(())
}

/// TPM_TakeOwnership over an OIAP session, the secrets OAEP-encrypted to the EK.
fn take_ownership(tpm: &mut RunningTpm, ek_modulus: &[u8], plan: &Tpm12Plan) -> Result<()> {
    let owner_auth = tpm12::auth_value(plan.owner_password);
    let srk_auth = tpm12::auth_value(plan.srk_password);
    let encrypt_err = |what: &'static str| {
        move |err: rsa::Error| ManufactureError::Encrypt {
            what,
            reason: err.to_string(),
        }
    };
    let ek = rsa::PublicKey::new(
        BoxedUint::from_be_slice_vartime(ek_modulus),
        BoxedUint::from(65537u32),
    )
    .map_err(encrypt_err("owner secret"))?;
    let encrypt = |secret: &[u8; 20], what: &'static str| {
        ek.encrypt(
            &mut getrandom::SysRng,
            rsa::Oaep::<sha1::Sha1>::new_with_label(tpm12::OAEP_LABEL),
            secret,
        )
        .map_err(encrypt_err(what))
    };
    let enc_owner = encrypt(&owner_auth, "owner secret")?;
    let enc_srk = encrypt(&srk_auth, "SRK secret")?;
    let response = tpm.transmit(&tpm12::oiap(), "TPM_OIAP")?;
    let session = tpm12::parse_oiap(&response).ok_or(DaemonError::BadResponse {
        command: "TPM_OIAP",
    })?;
    let mut nonce_odd = [0u8; 20];
    let _ = getrandom::fill(&mut nonce_odd);
    tpm.transmit(
        &tpm12::take_ownership(&enc_owner, &enc_srk, &owner_auth, &session, &nonce_odd),
        "TPM_TakeOwnership",
    )?;
    Ok(())
}
