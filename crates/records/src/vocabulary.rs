//! The controlled lesion vocabulary shared by the schema, the captioners and the validator.
//!
//! `schemas/caption.schema.json` lists the same strings; a unit test keeps them in step.

use serde::{Deserialize, Serialize};

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The schema string of this value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses a schema string.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

vocabulary!(
    /// Lesion and sign types a caption may name.
    LesionType {
        Microaneurysm => "microaneurysm",
        IntraretinalHaemorrhage => "intraretinal_haemorrhage",
        HardExudate => "hard_exudate",
        CottonWoolSpot => "cotton_wool_spot",
        VenousBeading => "venous_beading",
        Irma => "irma",
        Neovascularisation => "neovascularisation",
        PreretinalHaemorrhage => "preretinal_haemorrhage",
        VitreousHaemorrhage => "vitreous_haemorrhage",
        FibrousProliferation => "fibrous_proliferation",
        Drusen => "drusen",
        PigmentaryChange => "pigmentary_change",
        GeographicAtrophy => "geographic_atrophy",
        ChoroidalNeovascularScar => "choroidal_neovascular_scar",
        Tessellation => "tessellation",
        PeripapillaryAtrophy => "peripapillary_atrophy",
        ChorioretinalAtrophy => "chorioretinal_atrophy",
        LacquerCracks => "lacquer_cracks",
        DiscHaemorrhage => "disc_haemorrhage",
        RnflDefect => "rnfl_defect",
        ArteriolarNarrowing => "arteriolar_narrowing",
        AvNicking => "av_nicking",
        FlameHaemorrhage => "flame_haemorrhage",
        Other => "other",
    }
);

vocabulary!(
    /// Where in the fundus a lesion lies.
    LesionLocation {
        Superior => "superior",
        Inferior => "inferior",
        Nasal => "nasal",
        Temporal => "temporal",
        Macula => "macula",
        Fovea => "fovea",
        OpticDisc => "optic_disc",
        Peripapillary => "peripapillary",
        PosteriorPole => "posterior_pole",
        Periphery => "periphery",
        Diffuse => "diffuse",
    }
);

vocabulary!(
    /// How much of a lesion there is.
    LesionExtent {
        Single => "single",
        Few => "few",
        Several => "several",
        Many => "many",
        Extensive => "extensive",
    }
);

impl LesionType {
    /// Lesions that belong to diabetic retinopathy (grade 0 must mention none of them).
    pub fn is_diabetic(self) -> bool {
        use LesionType::*;
        matches!(
            self,
            Microaneurysm
                | IntraretinalHaemorrhage
                | HardExudate
                | CottonWoolSpot
                | VenousBeading
                | Irma
                | Neovascularisation
                | PreretinalHaemorrhage
                | VitreousHaemorrhage
                | FibrousProliferation
        )
    }

    /// Lesions that mark DR beyond mild (ICDR grade 2 or more names at least one).
    pub fn is_moderate_dr_sign(self) -> bool {
        use LesionType::*;
        matches!(
            self,
            IntraretinalHaemorrhage | HardExudate | CottonWoolSpot | VenousBeading | Irma
        )
    }

    /// Lesions that mark proliferative DR (ICDR grade 4 names at least one).
    pub fn is_proliferative_sign(self) -> bool {
        use LesionType::*;
        matches!(
            self,
            Neovascularisation | PreretinalHaemorrhage | VitreousHaemorrhage | FibrousProliferation
        )
    }

    /// Lesions of age-related macular degeneration.
    pub fn is_amd(self) -> bool {
        use LesionType::*;
        matches!(
            self,
            Drusen | PigmentaryChange | GeographicAtrophy | ChoroidalNeovascularScar
        )
    }

    /// Signs of glaucomatous optic neuropathy.
    pub fn is_glaucomatous(self) -> bool {
        use LesionType::*;
        matches!(self, DiscHaemorrhage | RnflDefect)
    }

    /// Signs of myopic maculopathy.
    pub fn is_myopic(self) -> bool {
        use LesionType::*;
        matches!(
            self,
            Tessellation | PeripapillaryAtrophy | ChorioretinalAtrophy | LacquerCracks
        )
    }

    /// Human wording for captions ("hard exudate").
    pub fn words(self) -> &'static str {
        use LesionType::*;
        match self {
            Microaneurysm => "microaneurysm",
            IntraretinalHaemorrhage => "intraretinal haemorrhage",
            HardExudate => "hard exudate",
            CottonWoolSpot => "cotton-wool spot",
            VenousBeading => "venous beading",
            Irma => "intraretinal microvascular abnormality",
            Neovascularisation => "neovascularisation",
            PreretinalHaemorrhage => "preretinal haemorrhage",
            VitreousHaemorrhage => "vitreous haemorrhage",
            FibrousProliferation => "fibrous proliferation",
            Drusen => "drusen",
            PigmentaryChange => "pigmentary change",
            GeographicAtrophy => "geographic atrophy",
            ChoroidalNeovascularScar => "disciform scar",
            Tessellation => "tessellation",
            PeripapillaryAtrophy => "peripapillary atrophy",
            ChorioretinalAtrophy => "chorioretinal atrophy",
            LacquerCracks => "lacquer cracks",
            DiscHaemorrhage => "disc haemorrhage",
            RnflDefect => "nerve fibre layer defect",
            ArteriolarNarrowing => "arteriolar narrowing",
            AvNicking => "arteriovenous nicking",
            FlameHaemorrhage => "flame haemorrhage",
            Other => "other finding",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for kind in LesionType::ALL {
            assert_eq!(LesionType::parse(kind.as_str()), Some(*kind));
            let json = serde_json::to_string(kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        for loc in LesionLocation::ALL {
            assert_eq!(LesionLocation::parse(loc.as_str()), Some(*loc));
        }
        for ext in LesionExtent::ALL {
            assert_eq!(LesionExtent::parse(ext.as_str()), Some(*ext));
        }
    }

    #[test]
    fn proliferative_signs_are_diabetic() {
        for kind in LesionType::ALL {
            if kind.is_proliferative_sign() || kind.is_moderate_dr_sign() {
                assert!(kind.is_diabetic(), "{kind:?}");
            }
        }
    }
}
