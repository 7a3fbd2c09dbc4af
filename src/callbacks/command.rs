//! The one table of the callback commands the exporter handles: each name as
//! Tencent spells it, the event it decodes as, and whether `callbacks set`
//! registers it. The receiver, the decoder, `callbacks show|set`, the
//! metric's pre-created series and the simulator all read it.

/// What a handled callback means, whichever spelling named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    CreateRoom,
    DestroyRoom,
    UpdateRoomInfo,
    MemberEnter,
    MemberLeave,
    SeatInfoChanged,
}

/// One spelling of a handled command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spelling {
    pub name: &'static str,
    pub command: Command,
    /// The spelling `callbacks set` registers; exactly one per command.
    pub registered: bool,
}

const fn spelling(name: &'static str, command: Command, registered: bool) -> Spelling {
    Spelling {
        name,
        command,
        registered,
    }
}

/// Every handled name, in the order `callbacks set` lists them. Tencent's
/// pages spell the room-info update both ways (the event page with
/// `After`, the command list and the get_callback sample without): both are
/// accepted, the command list's one is registered.
pub const COMMANDS: [Spelling; 7] = [
    spelling("Room.CallbackAfterCreateRoom", Command::CreateRoom, true),
    spelling("Room.CallbackAfterDestroyRoom", Command::DestroyRoom, true),
    spelling("Room.CallbackAfterUpdateRoomInfo", Command::UpdateRoomInfo, false),
    spelling("Room.CallbackUpdateRoomInfo", Command::UpdateRoomInfo, true),
    spelling("Room.CallbackAfterMemberEnter", Command::MemberEnter, true),
    spelling("Room.CallbackAfterMemberLeave", Command::MemberLeave, true),
    spelling("Mic.CallbackAfterSeatInfoChanged", Command::SeatInfoChanged, true),
];

/// The names of [`COMMANDS`], in its order.
pub const NAMES: &[&str] = &NAME_ARRAY;

const NAME_ARRAY: [&str; COMMANDS.len()] = {
    let mut names = [""; COMMANDS.len()];
    let mut i = 0;
    while i < COMMANDS.len() {
        names[i] = COMMANDS[i].name;
        i += 1;
    }
    names
};

/// `roomengine_callbacks_total`'s `command` for a command not in the table.
pub const OTHER: &str = "other";

/// The table's entry for `name` (exact, case included); `None`: not handled.
pub fn find(name: &str) -> Option<&'static Spelling> {
    COMMANDS.iter().find(|s| s.name == name)
}

impl Command {
    /// Every name of this command, in table order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        COMMANDS.iter().filter(move |s| s.command == self).map(|s| s.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_exactly_and_the_update_has_two() {
        assert_eq!(
            find("Room.CallbackUpdateRoomInfo").map(|s| s.command),
            Some(Command::UpdateRoomInfo)
        );
        for name in [
            "Room.CallbackAfterSomethingElse",
            "",
            "room.callbackaftercreateroom",
        ] {
            assert_eq!(find(name), None, "{name}");
        }
        assert_eq!(
            Command::UpdateRoomInfo.names().collect::<Vec<_>>(),
            ["Room.CallbackAfterUpdateRoomInfo", "Room.CallbackUpdateRoomInfo"]
        );
    }

    #[test]
    fn each_command_has_one_registered_spelling() {
        let all = [
            Command::CreateRoom,
            Command::DestroyRoom,
            Command::UpdateRoomInfo,
            Command::MemberEnter,
            Command::MemberLeave,
            Command::SeatInfoChanged,
        ];
        for command in all {
            let registered = COMMANDS
                .iter()
                .filter(|s| s.command == command && s.registered)
                .count();
            assert_eq!(registered, 1, "{command:?}");
        }
    }
}
