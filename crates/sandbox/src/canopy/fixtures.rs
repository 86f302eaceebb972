//! Canopy sandbox test logins and the carrier-side data behind them.
//!
//! # Test logins (Canopy's documented sandbox credentials)
//!
//! Any carrier of [`carriers`] accepts them; the password is always `pass_good`
//! ([`GOOD_PASSWORD`]). Any other user name or password is a bad login
//! (`NOT_AUTHENTICATED`, `login_error_message: null`).
//!
//! | user name             | what happens |
//! |-----------------------|--------------|
//! | `user_good`           | authenticated at once; auto + home policies |
//! | `user_good_diffs`     | like `user_good`; every monitoring refresh raises the auto premium by $25.00 (BI on the first vehicle), so each refresh yields a `MONITORING_EVENTS` |
//! | `user_mfa`            | `IDENTITY_VERIFICATION_OPTIONS` with [`mfa_options`], then `IDENTITY_VERIFICATION`, then a code |
//! | `user_optionless_mfa` | straight to `IDENTITY_VERIFICATION`, then a code |
//! | `user_locked`         | `NOT_AUTHENTICATED`, `login_error_message` = [`LOCKED_MESSAGE`] |
//! | `user_unactivated`    | `NOT_AUTHENTICATED`, `login_error_message` = [`UNACTIVATED_MESSAGE`] |
//! | `user_provider_error` | pull ends in `PROVIDER_ERROR`, `ERROR` webhook with `data.type = PROVIDER_ERROR` |
//! | `user_internal_error` | pull ends in `INTERNAL_ERROR`, `ERROR` webhook with `data.type = INTERNAL_ERROR` |
//!
//! MFA codes: `000000` is a bad code (`NOT_AUTHENTICATED`, `login_error_message: null`; the
//! consumer may sign in again), `000001` fails with [`MFA_EXPIRED_MESSAGE`] as
//! `login_error_message`, any other code is accepted.
//!
//! One account per (carrier, user name): signing in again with the same login at the same
//! carrier reaches the same account, so the pull carries the same `account_identifier`
//! ([`account_identifier`]).
//!
//! # Account data (every value; `n` is the login's number, see [`policy_numbers`])
//!
//! Policy holder: Morgan Lee Tester, `account_email` `morgan.tester@example.com`, `phone` and
//! `mobile_phone` `5555550100`, `home_phone`/`work_phone`/`work_phone_extension` null.
//! Addresses (`addresses`, `address_nature`): MAILING and PHYSICAL
//! `123 Main Street, Apt 4B, Springfield, IL, 62701` (number `123`, street `Main`, type `St`,
//! sec unit `Apt` `4B`, country `US`); LIENHOLDER `500 Lender Way, Columbus, OH, 43215`;
//! MORTGAGEE `900 Mortgage Blvd, Dallas, TX, 75201`.
//!
//! Drivers (`drivers`, also on each vehicle):
//! * Morgan Lee Tester: INSURED, FEMALE, MARRIED, born `04/12/1985`, licence `T12345678` (IL),
//!   BACHELORS, occupation `Engineer`, licensed at 16;
//! * Casey Tester: SPOUSE, MALE, MARRIED, born `09/30/1986`, licence `T87654321` (IL),
//!   occupation `Teacher`, licensed at 17.
//!
//! **Auto** `AU-555n001` (name `AUTO AU-555n001`, AUTO, ACTIVE, state IL): effective
//! `today − 45 days` (midnight UTC), expiry `effective + 6 months`; total premium 102 200 ¢,
//! paid 51 100 ¢, due 51 100 ¢, not paid in full, MONTHLY, estimated annual 204 400 ¢.
//! Named insureds Morgan (primary) and Casey.
//! * 2021 TOYOTA Camry SE, VIN `4T1G11AK5MU000001`, PASSENGER CAR, 12 000 mi/yr, COMMUTE,
//!   FINANCE, `lien_holder` `Sandbox Auto Finance` (LIENHOLDER address), garaged at PHYSICAL;
//!   drivers Morgan (primary), Casey. Coverages (limits / deductible / premium, cents):
//!   BODILY_INJURY_LIABILITY 10 000 000 per person / 30 000 000 per incident, 21 000;
//!   PROPERTY_DAMAGE_LIABILITY 10 000 000 per incident, 15 000;
//!   UNINSURED_MOTORIST_BODILY_INJURY_LIABILITY 5 000 000 / 10 000 000, 4 000;
//!   UNINSURED_MOTORIST_PROPERTY_DAMAGE_LIABILITY 2 500 000 per incident, deductible 25 000, 1 200;
//!   COMPREHENSIVE deductible 50 000, 9 800; COLLISION deductible 100 000, 18 400;
//!   PERSONAL_INJURY_PROTECTION `per_person_unlimited` and `per_incident_unlimited` true, amounts
//!   null (an unlimited limit as Canopy states one); RENTAL_REIMBURSEMENT `per_day_limit_cents`
//!   3 000, `max_days` 30 (the pair from Canopy's own `ADD_VEHICLE` servicing example). Neither
//!   of the last two itemizes a premium (`premium_cents` null).
//! * 2016 HONDA Civic LX, VIN `2HGFC2F59GH000002`, PASSENGER CAR, 8 000 mi/yr, PLEASURE, OWN,
//!   no lien holder; drivers Casey (primary), Morgan. Coverages: BODILY_INJURY_LIABILITY
//!   10 000 000 / 30 000 000, 16 500; PROPERTY_DAMAGE_LIABILITY 10 000 000, 12 000;
//!   UNINSURED_MOTORIST_BODILY_INJURY_LIABILITY 5 000 000 / 10 000 000, 3 300;
//!   UNINSURED_MOTORIST_PROPERTY_DAMAGE_LIABILITY 2 500 000, deductible 25 000, 1 000
//!   (liability only: no COMPREHENSIVE, no COLLISION).
//!
//! **Home** `HO-555n002` (name `HOME HO-555n002`, HOMEOWNERS, ACTIVE, state IL): effective
//! `today − 120 days`, expiry `effective + 12 months`; total premium 132 700 ¢, paid in full
//! (paid 132 700, due 0), ANNUALLY, `deductible_cents` 100 000. One dwelling at the PHYSICAL
//! address, replacement cost 35 000 000 ¢, REPLACEMENT_COST, extended replacement 25 %.
//! Mortgagee `Sandbox Home Lending` (FIRST, loan `ML-0042-7781`, MORTGAGEE address), also in the
//! deprecated `mortgagee_name`/`mortgagee_address`/`mortgage_loan_number`. Coverages:
//! DWELLING 35 000 000 per incident, 98 000; OTHER_STRUCTURES 3 500 000 (`"10.000"` %), 4 900;
//! PERSONAL_PROPERTY 17 500 000 (`"50.000"` %), 23 100; LOSS_OF_USE 7 000 000 (`"20.000"` %),
//! 2 400; PERSONAL_LIABILITY 30 000 000 per incident, 3 000; MEDICAL_PAYMENTS 500 000 per person,
//! 1 300; ALL_OTHER_PERILS deductible 100 000; WINDSTORM_OR_HAIL deductible 700 000 (`"2.000"` %).
//!
//! Documents (application/pdf, `date_added` = the policy's effective date): auto Declarations,
//! auto Insurance ID Card, home Declarations.
//!
//! Every `*_id` is new in every pull (as at Canopy, where each pull holds its own copies); the
//! stable keys are `account_identifier`, `carrier_policy_number`, `vin` and coverage `name`.

use chrono::{DateTime, Datelike, Duration, Months, NaiveTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use super::model::{
    Address, Carrier, Driver, Dwelling, DwellingCoverage, Mortgagee, NamedInsured, Policy, Vehicle,
    VehicleCoverage,
};
use crate::clock::format_ts;

/// The password of every sandbox test login.
pub const GOOD_PASSWORD: &str = "pass_good";
pub const LOCKED_MESSAGE: &str =
    "Your account has been locked. Please contact your insurance carrier to unlock it.";
pub const UNACTIVATED_MESSAGE: &str = "Your online account has not been activated yet. Please finish activating it on your carrier's website.";
pub const MFA_EXPIRED_MESSAGE: &str =
    "Your verification code has expired. Please sign in again to receive a new code.";
/// Shown when a reconnect signs in to a different account than the monitored one.
pub const WRONG_ACCOUNT_MESSAGE: &str =
    "These credentials belong to a different account than the one being reconnected.";
/// The MFA code that is always wrong.
pub const BAD_MFA_CODE: &str = "000000";
/// The MFA code that triggers the login-error-message flow.
pub const MESSAGE_MFA_CODE: &str = "000001";

/// The sandbox logins that reach an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TestLogin {
    Good,
    GoodDiffs,
    Mfa,
    OptionlessMfa,
}

impl TestLogin {
    pub fn username(self) -> &'static str {
        match self {
            Self::Good => "user_good",
            Self::GoodDiffs => "user_good_diffs",
            Self::Mfa => "user_mfa",
            Self::OptionlessMfa => "user_optionless_mfa",
        }
    }

    /// The `n` in the policy numbers (`AU-555n001`).
    pub fn number(self) -> u32 {
        match self {
            Self::Good => 0,
            Self::Mfa => 1,
            Self::OptionlessMfa => 2,
            Self::GoodDiffs => 3,
        }
    }
}

/// What a sign-in attempt with a user name and password leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Reaches an account (possibly through MFA).
    Account(TestLogin),
    NotAuthenticated {
        login_error_message: Option<String>,
    },
    ProviderError,
    InternalError,
}

/// Classifies a sign-in the way Canopy's sandbox does.
pub fn classify_login(username: &str, password: &str) -> LoginOutcome {
    let bad = LoginOutcome::NotAuthenticated {
        login_error_message: None,
    };
    if password != GOOD_PASSWORD {
        return bad;
    }
    match username {
        "user_good" => LoginOutcome::Account(TestLogin::Good),
        "user_good_diffs" => LoginOutcome::Account(TestLogin::GoodDiffs),
        "user_mfa" => LoginOutcome::Account(TestLogin::Mfa),
        "user_optionless_mfa" => LoginOutcome::Account(TestLogin::OptionlessMfa),
        "user_locked" => LoginOutcome::NotAuthenticated {
            login_error_message: Some(LOCKED_MESSAGE.into()),
        },
        "user_unactivated" => LoginOutcome::NotAuthenticated {
            login_error_message: Some(UNACTIVATED_MESSAGE.into()),
        },
        "user_provider_error" => LoginOutcome::ProviderError,
        "user_internal_error" => LoginOutcome::InternalError,
        _ => bad,
    }
}

/// `data.mfa_options` of the `IDENTITY_VERIFICATION_OPTIONS` AUTH_STATUS: option key → label.
pub fn mfa_options() -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("sms".into(), "Text message to (***) ***-0100".into());
    m.insert("email".into(), "Email to m****@example.com".into());
    m
}

/// The carriers the sandbox widget offers (`GET /carriers`).
pub fn carriers() -> Vec<Carrier> {
    let c = |id: &str, name: &str, color: &str, home: &str| Carrier {
        carrier_id: id.into(),
        name: name.into(),
        username_field_placeholder: Some("Username".into()),
        third_field_placeholder: None,
        color: Some(color.into()),
        homepage_url: Some(home.into()),
        create_account_url: Some(format!("https://{home}/register")),
        reset_password_url: Some(format!("https://{home}/reset-password")),
        disable_password_field: false,
        servicing_actions: Vec::new(),
        products: vec!["personal".into()],
    };
    vec![
        c("statefarm", "State Farm", "#e31837", "www.statefarm.com"),
        c(
            "progressive",
            "Progressive",
            "#0077b3",
            "www.progressive.com",
        ),
        c("geico", "GEICO", "#154b8b", "www.geico.com"),
        c("allstate", "Allstate", "#0033a0", "www.allstate.com"),
        c(
            "libertymutual",
            "Liberty Mutual",
            "#ffd000",
            "www.libertymutual.com",
        ),
    ]
}

pub fn carrier(id: &str) -> Option<Carrier> {
    carriers().into_iter().find(|c| c.carrier_id == id)
}

/// A stable, uuid-shaped `account_identifier` for (team, carrier, user name).
pub fn account_identifier(team_id: &str, carrier_id: &str, username: &str) -> String {
    stable_uuid(&format!("account:{team_id}:{carrier_id}:{username}"))
}

pub(crate) fn stable_uuid(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// (auto, home) policy numbers of a login.
pub fn policy_numbers(login: TestLogin) -> (String, String) {
    let n = login.number();
    (format!("AU-555{n}001"), format!("HO-555{n}002"))
}

/// A document the carrier holds, attached to a policy by its number.
#[derive(Clone, Debug, PartialEq)]
pub struct DocumentTemplate {
    pub title: String,
    pub document_type: String,
    pub carrier_policy_number: String,
    pub date_added: String,
}

/// What the carrier holds for one online account. Ids in it are placeholders that every pull
/// replaces with fresh uuids (consistently within the pull).
#[derive(Clone, Debug, PartialEq)]
pub struct AccountData {
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub account_email: Option<String>,
    pub phone: Option<String>,
    pub mobile_phone: Option<String>,
    pub home_phone: Option<String>,
    pub work_phone: Option<String>,
    pub work_phone_extension: Option<String>,
    pub addresses: Vec<Address>,
    pub drivers: Vec<Driver>,
    pub policies: Vec<Policy>,
    pub documents: Vec<DocumentTemplate>,
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[allow(clippy::too_many_arguments)]
fn address(
    id: &str,
    nature: &str,
    number: &str,
    street: &str,
    street_type: &str,
    unit: Option<(&str, &str)>,
    city: &str,
    state: &str,
    zip: &str,
    full: &str,
) -> Address {
    Address {
        address_id: id.into(),
        full_address: s(full),
        address_nature: s(nature),
        country: s("US"),
        number: s(number),
        street: s(street),
        street_type: s(street_type),
        city: s(city),
        state: s(state),
        sec_unit_type: unit.map(|u| u.0.to_owned()),
        sec_unit_num: unit.map(|u| u.1.to_owned()),
        zip: s(zip),
        prefix: None,
    }
}

pub(crate) fn physical_address() -> Address {
    address(
        "addr-physical",
        "PHYSICAL",
        "123",
        "Main",
        "St",
        Some(("Apt", "4B")),
        "Springfield",
        "IL",
        "62701",
        "123 Main Street, Apt 4B, Springfield, IL, 62701",
    )
}

pub(crate) fn lienholder_address() -> Address {
    address(
        "addr-lienholder",
        "LIENHOLDER",
        "500",
        "Lender",
        "Way",
        None,
        "Columbus",
        "OH",
        "43215",
        "500 Lender Way, Columbus, OH, 43215",
    )
}

pub(crate) fn mortgagee_address() -> Address {
    address(
        "addr-mortgagee",
        "MORTGAGEE",
        "900",
        "Mortgage",
        "Blvd",
        None,
        "Dallas",
        "TX",
        "75201",
        "900 Mortgage Blvd, Dallas, TX, 75201",
    )
}

fn drivers() -> Vec<Driver> {
    vec![
        Driver {
            driver_id: "drv-morgan".into(),
            first_name: s("Morgan"),
            middle_name: s("Lee"),
            last_name: s("Tester"),
            drivers_license: s("T12345678"),
            drivers_license_state: s("IL"),
            date_of_birth_str: s("04/12/1985"),
            gender: s("FEMALE"),
            marital_status: s("MARRIED"),
            relationship_to_insured: s("INSURED"),
            age: None,
            age_on_date: None,
            education: s("BACHELORS"),
            occupation: s("Engineer"),
            age_licensed: Some(16),
        },
        Driver {
            driver_id: "drv-casey".into(),
            first_name: s("Casey"),
            middle_name: None,
            last_name: s("Tester"),
            drivers_license: s("T87654321"),
            drivers_license_state: s("IL"),
            date_of_birth_str: s("09/30/1986"),
            gender: s("MALE"),
            marital_status: s("MARRIED"),
            relationship_to_insured: s("SPOUSE"),
            age: None,
            age_on_date: None,
            education: None,
            occupation: s("Teacher"),
            age_licensed: Some(17),
        },
    ]
}

/// The `friendly_name` Canopy pairs with a `VehicleCoverageTypes` value.
pub fn vehicle_coverage_friendly_name(name: &str) -> String {
    match name {
        "BODILY_INJURY_LIABILITY" => "Bodily Injury Liability".into(),
        "PROPERTY_DAMAGE_LIABILITY" => "Property Damage Liability".into(),
        "UNINSURED_MOTORIST_BODILY_INJURY_LIABILITY" => {
            "Uninsured Motorist Bodily Injury Liability".into()
        }
        "UNINSURED_MOTORIST_PROPERTY_DAMAGE_LIABILITY" => {
            "Uninsured Motorist Property Damage Liability".into()
        }
        "UNINSURED_MOTORISTS" => "Uninsured Motorists".into(),
        "UNDERINSURED_MOTORISTS" => "Underinsured Motorists".into(),
        "COMPREHENSIVE" => "Comprehensive".into(),
        "COLLISION" => "Collision".into(),
        "MEDICAL_PAYMENTS" => "Medical Payments".into(),
        "PERSONAL_INJURY_PROTECTION" => "Personal Injury Protection".into(),
        "RENTAL_REIMBURSEMENT" => "Rental Reimbursement".into(),
        "TOWING_AND_LABOR" => "Towing and Labor".into(),
        "EMERGENCY_ROAD_SERVICE" => "Emergency Road Service".into(),
        "FULL_GLASS" => "Full Glass".into(),
        "LOAN_OR_LEASE_ASSISTANCE" => "Loan or Lease Assistance".into(),
        other => title_case(other),
    }
}

/// The `friendly_name` Canopy pairs with a `DwellingCoverage.name` value.
pub fn dwelling_coverage_friendly_name(name: &str) -> String {
    match name {
        "LOSS_OF_USE" => "Loss of Use".into(),
        "WINDSTORM_OR_HAIL" => "Windstorm or Hail".into(),
        "ICC" => "Increased Cost of Compliance".into(),
        "FUNGI_BACTERIA_AND_MOLD" => "Fungi, Bacteria, and Mold".into(),
        "WATER_BACKUP_AND_SUMP_OVERFLOW" => "Water Backup and Sump Overflow".into(),
        other => title_case(other),
    }
}

fn title_case(code: &str) -> String {
    code.split('_')
        .map(|w| {
            let lower = w.to_ascii_lowercase();
            if matches!(lower.as_str(), "of" | "and" | "or" | "to") {
                return lower;
            }
            let mut c = lower.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A vehicle coverage with the usual defaults; `id` is a placeholder.
pub fn vehicle_coverage(
    id: &str,
    name: &str,
    per_person: Option<i64>,
    per_incident: Option<i64>,
    deductible: Option<i64>,
    premium: Option<i64>,
) -> VehicleCoverage {
    VehicleCoverage {
        vehicle_coverage_id: id.into(),
        premium_group_id: None,
        name: name.into(),
        friendly_name: vehicle_coverage_friendly_name(name),
        premium_cents: premium,
        per_person_limit_cents: per_person,
        per_person_unlimited: false,
        per_incident_limit_cents: per_incident,
        per_incident_unlimited: false,
        per_day_limit_cents: None,
        max_days: None,
        deductible_cents: deductible,
        actual_cash_value: false,
        is_declined: false,
        is_stacked: None,
        pip_deductible_applicability: None,
        per_mile_premium_tenth_of_cents: None,
    }
}

/// A dwelling coverage with the usual defaults; `id` is a placeholder.
pub fn dwelling_coverage(
    id: &str,
    name: &str,
    per_person: Option<i64>,
    per_incident: Option<(i64, Option<&str>)>,
    deductible: Option<(i64, Option<&str>)>,
    premium: Option<i64>,
) -> DwellingCoverage {
    DwellingCoverage {
        dwelling_coverage_id: id.into(),
        name: name.into(),
        friendly_name: dwelling_coverage_friendly_name(name),
        premium_cents: premium,
        per_person_limit_cents: per_person,
        per_person_unlimited: None,
        per_incident_limit_cents: per_incident.map(|p| p.0),
        per_incident_limit_percent: per_incident.and_then(|p| p.1.map(str::to_owned)),
        per_incident_unlimited: None,
        per_incident_limit_months: None,
        deductible_cents: deductible.map(|d| d.0),
        deductible_percent: deductible.and_then(|d| d.1.map(str::to_owned)),
        is_declined: false,
    }
}

fn named_insureds(prefix: &str) -> Vec<NamedInsured> {
    vec![
        NamedInsured {
            named_insured_id: format!("{prefix}-ni-morgan"),
            first_name: s("Morgan"),
            middle_name: s("Lee"),
            last_name: s("Tester"),
            full_name: s("Morgan Lee Tester"),
            is_primary_named_insured: Some(true),
            email: s("morgan.tester@example.com"),
            home_phone: None,
            mobile_phone: s("5555550100"),
            work_phone: None,
            work_phone_extension: None,
        },
        NamedInsured {
            named_insured_id: format!("{prefix}-ni-casey"),
            first_name: s("Casey"),
            middle_name: None,
            last_name: s("Tester"),
            full_name: s("Casey Tester"),
            is_primary_named_insured: Some(false),
            email: None,
            home_phone: None,
            mobile_phone: None,
            work_phone: None,
            work_phone_extension: None,
        },
    ]
}

fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.from_utc_datetime(&t.date_naive().and_time(NaiveTime::MIN))
}

/// `Effective MM/DD/YYYY - MM/DD/YYYY`, as in Canopy's examples.
pub fn term_description(effective: DateTime<Utc>, expiry: DateTime<Utc>) -> String {
    let f = |d: DateTime<Utc>| format!("{:02}/{:02}/{}", d.month(), d.day(), d.year());
    format!("Effective {} - {}", f(effective), f(expiry))
}

/// The auto and home policies of a test login at a carrier, as of `now`.
pub fn account_data(login: TestLogin, carrier: &Carrier, now: DateTime<Utc>) -> AccountData {
    let (auto_no, home_no) = policy_numbers(login);
    let drivers = drivers();
    let (morgan, casey) = (&drivers[0], &drivers[1]);
    let today = midnight(now);

    let auto_eff = today - Duration::days(45);
    let auto_exp = auto_eff + Months::new(6);
    let camry = Vehicle {
        vehicle_id: "veh-camry".into(),
        year: Some(2021),
        make: s("TOYOTA"),
        model: s("Camry"),
        series: s("SE"),
        series2: None,
        vehicle_type: s("PASSENGER CAR"),
        annual_mileage: Some(12_000),
        current_mileage: None,
        vin: s("4T1G11AK5MU000001"),
        hin: None,
        serial_number: None,
        uses: Some(vec!["COMMUTE".into()]),
        purchase_date: None,
        ownership_type: s("FINANCE"),
        features: None,
        is_removed: false,
        lien_holder: s("Sandbox Auto Finance"),
        garaging_address: Some(physical_address()),
        lien_holder_address: Some(lienholder_address()),
        coverages: vec![
            vehicle_coverage(
                "vc-camry-bi",
                "BODILY_INJURY_LIABILITY",
                Some(10_000_000),
                Some(30_000_000),
                None,
                Some(21_000),
            ),
            vehicle_coverage(
                "vc-camry-pd",
                "PROPERTY_DAMAGE_LIABILITY",
                None,
                Some(10_000_000),
                None,
                Some(15_000),
            ),
            vehicle_coverage(
                "vc-camry-umbi",
                "UNINSURED_MOTORIST_BODILY_INJURY_LIABILITY",
                Some(5_000_000),
                Some(10_000_000),
                None,
                Some(4_000),
            ),
            vehicle_coverage(
                "vc-camry-umpd",
                "UNINSURED_MOTORIST_PROPERTY_DAMAGE_LIABILITY",
                None,
                Some(2_500_000),
                Some(25_000),
                Some(1_200),
            ),
            vehicle_coverage(
                "vc-camry-comp",
                "COMPREHENSIVE",
                None,
                None,
                Some(50_000),
                Some(9_800),
            ),
            vehicle_coverage(
                "vc-camry-coll",
                "COLLISION",
                None,
                None,
                Some(100_000),
                Some(18_400),
            ),
            VehicleCoverage {
                per_person_unlimited: true,
                per_incident_unlimited: true,
                ..vehicle_coverage(
                    "vc-camry-pip",
                    "PERSONAL_INJURY_PROTECTION",
                    None,
                    None,
                    None,
                    None,
                )
            },
            VehicleCoverage {
                per_day_limit_cents: Some(3_000),
                max_days: Some(30),
                ..vehicle_coverage(
                    "vc-camry-rental",
                    "RENTAL_REIMBURSEMENT",
                    None,
                    None,
                    None,
                    None,
                )
            },
        ],
        drivers: vec![morgan.on_vehicle(true), casey.on_vehicle(false)],
    };
    let civic = Vehicle {
        vehicle_id: "veh-civic".into(),
        year: Some(2016),
        make: s("HONDA"),
        model: s("Civic"),
        series: s("LX"),
        series2: None,
        vehicle_type: s("PASSENGER CAR"),
        annual_mileage: Some(8_000),
        current_mileage: None,
        vin: s("2HGFC2F59GH000002"),
        hin: None,
        serial_number: None,
        uses: Some(vec!["PLEASURE".into()]),
        purchase_date: None,
        ownership_type: s("OWN"),
        features: None,
        is_removed: false,
        lien_holder: None,
        garaging_address: Some(physical_address()),
        lien_holder_address: None,
        coverages: vec![
            vehicle_coverage(
                "vc-civic-bi",
                "BODILY_INJURY_LIABILITY",
                Some(10_000_000),
                Some(30_000_000),
                None,
                Some(16_500),
            ),
            vehicle_coverage(
                "vc-civic-pd",
                "PROPERTY_DAMAGE_LIABILITY",
                None,
                Some(10_000_000),
                None,
                Some(12_000),
            ),
            vehicle_coverage(
                "vc-civic-umbi",
                "UNINSURED_MOTORIST_BODILY_INJURY_LIABILITY",
                Some(5_000_000),
                Some(10_000_000),
                None,
                Some(3_300),
            ),
            vehicle_coverage(
                "vc-civic-umpd",
                "UNINSURED_MOTORIST_PROPERTY_DAMAGE_LIABILITY",
                None,
                Some(2_500_000),
                Some(25_000),
                Some(1_000),
            ),
        ],
        drivers: vec![casey.on_vehicle(true), morgan.on_vehicle(false)],
    };
    let auto = Policy {
        policy_id: "pol-auto".into(),
        name: Some(format!("AUTO {auto_no}")),
        description: Some(term_description(auto_eff, auto_exp)),
        carrier_policy_number: Some(auto_no.clone()),
        policy_type: s("AUTO"),
        effective_date: Some(format_ts(auto_eff)),
        expiry_date: Some(format_ts(auto_exp)),
        renewal_date: None,
        canceled_date: None,
        total_premium_cents: Some(102_200),
        paid_in_full: Some(false),
        amount_paid_cents: Some(51_100),
        amount_due_cents: Some(51_100),
        total_estimated_annual_premium_cents: Some(204_400),
        total_minimum_premium_cents: None,
        total_deposit_premium_cents: None,
        carrier_name: carrier.carrier_id.clone(),
        carrier_friendly_name: Some(carrier.name.clone()),
        status: s("ACTIVE"),
        state: s("IL"),
        limited_access: false,
        form_of_business: None,
        deductible_cents: None,
        is_monoline: false,
        policy_check: None,
        dwellings: Vec::new(),
        locations: Vec::new(),
        vehicles: vec![camry, civic],
        commercial_named_insureds: Vec::new(),
        named_insureds: named_insureds("auto"),
        additional_interests: Vec::new(),
        life: None,
        forms_and_endorsements: Vec::new(),
        is_telematics_enabled: Some(false),
        payment_frequency: s("MONTHLY"),
        last_payment_date: Some(format_ts(today - Duration::days(15))),
        premium_groups: Vec::new(),
    };

    let home_eff = today - Duration::days(120);
    let home_exp = home_eff + Months::new(12);
    let mortgagee = Mortgagee {
        mortgagee_id: "mtg-1".into(),
        mortgagee_name: s("Sandbox Home Lending"),
        mortgagee_address: Some(mortgagee_address()),
        mortgagee_type: s("FIRST"),
        mortgage_loan_number: s("ML-0042-7781"),
    };
    let dwelling = Dwelling {
        dwelling_id: "dwl-1".into(),
        address: physical_address(),
        coverages: vec![
            dwelling_coverage(
                "dc-dwelling",
                "DWELLING",
                None,
                Some((35_000_000, None)),
                None,
                Some(98_000),
            ),
            dwelling_coverage(
                "dc-other",
                "OTHER_STRUCTURES",
                None,
                Some((3_500_000, Some("10.000"))),
                None,
                Some(4_900),
            ),
            dwelling_coverage(
                "dc-property",
                "PERSONAL_PROPERTY",
                None,
                Some((17_500_000, Some("50.000"))),
                None,
                Some(23_100),
            ),
            dwelling_coverage(
                "dc-lou",
                "LOSS_OF_USE",
                None,
                Some((7_000_000, Some("20.000"))),
                None,
                Some(2_400),
            ),
            dwelling_coverage(
                "dc-liability",
                "PERSONAL_LIABILITY",
                None,
                Some((30_000_000, None)),
                None,
                Some(3_000),
            ),
            dwelling_coverage(
                "dc-medpay",
                "MEDICAL_PAYMENTS",
                Some(500_000),
                None,
                None,
                Some(1_300),
            ),
            dwelling_coverage(
                "dc-aop",
                "ALL_OTHER_PERILS",
                None,
                None,
                Some((100_000, None)),
                None,
            ),
            dwelling_coverage(
                "dc-wind",
                "WINDSTORM_OR_HAIL",
                None,
                None,
                Some((700_000, Some("2.000"))),
                None,
            ),
        ],
        mortgagee_name: mortgagee.mortgagee_name.clone(),
        mortgagee_address: mortgagee.mortgagee_address.clone(),
        mortgage_loan_number: mortgagee.mortgage_loan_number.clone(),
        mortgagees: vec![mortgagee],
        replacement_cost_cents: Some(35_000_000),
        cash_value_cents: None,
        property_data: None,
        loss_settlement_type: s("REPLACEMENT_COST"),
        extended_replacement_cost_percent: Some(25),
        total_replacement_cost_cents: Some(43_750_000),
        is_replacement_cost_cents_derived: false,
    };
    let home = Policy {
        policy_id: "pol-home".into(),
        name: Some(format!("HOME {home_no}")),
        description: Some(term_description(home_eff, home_exp)),
        carrier_policy_number: Some(home_no.clone()),
        policy_type: s("HOMEOWNERS"),
        effective_date: Some(format_ts(home_eff)),
        expiry_date: Some(format_ts(home_exp)),
        renewal_date: None,
        canceled_date: None,
        total_premium_cents: Some(132_700),
        paid_in_full: Some(true),
        amount_paid_cents: Some(132_700),
        amount_due_cents: Some(0),
        total_estimated_annual_premium_cents: Some(132_700),
        total_minimum_premium_cents: None,
        total_deposit_premium_cents: None,
        carrier_name: carrier.carrier_id.clone(),
        carrier_friendly_name: Some(carrier.name.clone()),
        status: s("ACTIVE"),
        state: s("IL"),
        limited_access: false,
        form_of_business: None,
        deductible_cents: Some(100_000),
        is_monoline: true,
        policy_check: None,
        dwellings: vec![dwelling],
        locations: Vec::new(),
        vehicles: Vec::new(),
        commercial_named_insureds: Vec::new(),
        named_insureds: named_insureds("home"),
        additional_interests: Vec::new(),
        life: None,
        forms_and_endorsements: Vec::new(),
        is_telematics_enabled: None,
        payment_frequency: s("ANNUALLY"),
        last_payment_date: Some(format_ts(home_eff)),
        premium_groups: Vec::new(),
    };

    let mut mailing = physical_address();
    mailing.address_id = "addr-mailing".into();
    mailing.address_nature = s("MAILING");
    let documents = vec![
        doc(auto_eff, &auto_no, "AUTO", "Declarations", "DECLARATIONS"),
        doc(
            auto_eff,
            &auto_no,
            "AUTO",
            "Insurance ID Card",
            "INSURANCE_ID_CARD",
        ),
        doc(home_eff, &home_no, "HOME", "Declarations", "DECLARATIONS"),
    ];
    AccountData {
        first_name: s("Morgan"),
        middle_name: s("Lee"),
        last_name: s("Tester"),
        account_email: s("morgan.tester@example.com"),
        phone: s("5555550100"),
        mobile_phone: s("5555550100"),
        home_phone: None,
        work_phone: None,
        work_phone_extension: None,
        addresses: vec![
            mailing,
            physical_address(),
            lienholder_address(),
            mortgagee_address(),
        ],
        drivers,
        policies: vec![auto, home],
        documents,
    }
}

fn doc(
    date: DateTime<Utc>,
    number: &str,
    kind: &str,
    what: &str,
    doc_type: &str,
) -> DocumentTemplate {
    DocumentTemplate {
        title: format!(
            "{:02}-{:02}-{} - {kind} {number} - {what}",
            date.month(),
            date.day(),
            date.year()
        ),
        document_type: doc_type.into(),
        carrier_policy_number: number.into(),
        date_added: format_ts(date),
    }
}

/// Recomputes a policy's `total_premium_cents` as the sum of its coverage premiums, as a
/// carrier would after an endorsement.
pub fn recompute_premium(policy: &mut Policy) {
    let vehicles: i64 = policy
        .vehicles
        .iter()
        .flat_map(|v| &v.coverages)
        .filter_map(|c| c.premium_cents)
        .sum();
    let dwellings: i64 = policy
        .dwellings
        .iter()
        .flat_map(|d| &d.coverages)
        .filter_map(|c| c.premium_cents)
        .sum();
    let total = vehicles + dwellings;
    if total > 0 {
        policy.total_premium_cents = Some(total);
        if let Some(paid) = policy.amount_paid_cents {
            policy.amount_due_cents = Some((total - paid).max(0));
            policy.paid_in_full = Some(paid >= total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn premiums_add_up() {
        let data = account_data(TestLogin::Good, &carriers()[0], Utc::now());
        for p in &data.policies {
            let mut q = p.clone();
            recompute_premium(&mut q);
            assert_eq!(
                q.total_premium_cents, p.total_premium_cents,
                "{:?}",
                p.carrier_policy_number
            );
        }
    }

    #[test]
    fn logins_classify() {
        assert_eq!(
            classify_login("user_good", "pass_good"),
            LoginOutcome::Account(TestLogin::Good)
        );
        assert_eq!(
            classify_login("user_good", "nope"),
            LoginOutcome::NotAuthenticated {
                login_error_message: None
            }
        );
        assert!(matches!(
            classify_login("user_locked", "pass_good"),
            LoginOutcome::NotAuthenticated {
                login_error_message: Some(_)
            }
        ));
        assert_eq!(
            classify_login("user_provider_error", "pass_good"),
            LoginOutcome::ProviderError
        );
        assert_eq!(
            account_identifier("t", "statefarm", "user_good"),
            account_identifier("t", "statefarm", "user_good")
        );
        assert_ne!(
            account_identifier("t", "statefarm", "user_good"),
            account_identifier("t", "geico", "user_good")
        );
    }

    #[test]
    fn friendly_names() {
        assert_eq!(
            dwelling_coverage_friendly_name("OTHER_STRUCTURES"),
            "Other Structures"
        );
        assert_eq!(vehicle_coverage_friendly_name("COLLISION"), "Collision");
        assert_eq!(
            dwelling_coverage_friendly_name("LOSS_OF_USE"),
            "Loss of Use"
        );
    }
}
