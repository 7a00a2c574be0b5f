//! `swtpm_setup --help`.

pub fn text() -> String {
    format!(
        "swtpm_setup {version} (vtpm): manufacture a virtual TPM's state: endorsement keys,
their certificates from a local CA, the platform certificate and the PCR banks.

Usage: swtpm_setup --tpm-state <dir> [options]

State and daemon:
  --tpm-state <dir>, --tpmstate <dir>
                   where the TPM state goes (required): a directory, dir://<dir>
                   or file://<file>
  --tpm <command line>
                   the TPM daemon with its subcommand, e.g. '/usr/bin/swtpm socket';
                   default: the swtpm next to this program, else from PATH
  --tpm2           make a TPM 2 (default: TPM 1.2)
  --overwrite      replace existing state
  --not-overwrite  keep existing state and succeed without doing anything
  --reconfigure    TPM 2: only change the active PCR banks of existing state
  --runas <user>   as root: do everything as this user (name or uid)
  --logfile <file> append messages here (the daemon's too) instead of stdout/stderr

Keys and certificates:
  --createek       create the EKs (TPM 2: an RSA and an ECC P-384 EK)
  --create-ek-cert create EK certificates (implies --createek)
  --create-platform-cert
                   create the platform certificate (implies --createek)
  --allow-signing  TPM 2: EKs that can sign (not the standard EK template)
  --decryption     TPM 2: with --allow-signing, EKs that can also decrypt
  --rsa-keysize <2048|3072|max>
                   TPM 2: size of the RSA EK (default 2048, or rsa_keysize in the
                   configuration)
  --create-spk     TPM 2: also create a storage primary key (deprecated)
  --ecc            TPM 2: make that storage primary key an ECC key
  --lock-nvram     write-lock the NV indices written
  --vmid <id>      VM name for the certificates' subject
  --write-ek-cert-files <dir>
                   also write the EK certificates as ek-<key>.crt into dir
  --config <file>  swtpm_setup.conf to use (default: the user's, else /etc's)

TPM 1.2 ownership:
  --take-ownership take ownership (implies --createek)
  --ownerpass <pw> owner password (default ooo); --owner-well-known: 20 zero bytes
  --srkpass <pw>   SRK password (default sss); --srk-well-known: 20 zero bytes

Encrypted state (passed to the daemon as --key):
  --keyfile <file>, --keyfile-fd <fd>
                   the AES key in hex
  --pwdfile <file>, --pwdfile-fd <fd>
                   a passphrase to derive the key from
  --cipher <aes-128-cbc|aes-256-cbc>
                   default aes-128-cbc; the daemon must later use the same

PCR banks:
  --pcr-banks <list>
                   TPM 2: banks to activate, e.g. sha256,sha384; '-' keeps all;
                   default: active_pcr_banks in the configuration, else sha256

Other:
  --display        list what was created
  --print-capabilities
                   print the supported features as JSON and exit
  --create-config-files [overwrite][,root][,skip-if-exist]
                   write swtpm_setup.conf, swtpm-localca.conf and
                   swtpm-localca.options for this user and exit
  --version        print the version and exit
  --help, -h       print this text and exit

TPM 2 profiles (--profile, --profile-name, --profile-file, --profile-file-fd,
--profile-remove-disabled, --print-profiles) need libtpms 0.10 and are refused.
--swtpm_ioctl and --tcsd-system-ps-file are accepted and ignored.
",
        version = super::VERSION
    )
}
