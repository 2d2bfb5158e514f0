# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_berth_global_optspecs
    string join \n h/help V/version
end

function __fish_berth_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_berth_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_berth_using_subcommand
    set -l cmd (__fish_berth_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c berth -n "__fish_berth_needs_command" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_needs_command" -s V -l version -d 'Print version'
complete -c berth -n "__fish_berth_needs_command" -f -a "validate" -d 'Check a manifest repo; every finding names path:line:col'
complete -c berth -n "__fish_berth_needs_command" -f -a "plan" -d 'Show what `apply` would change on a partner\'s host, and why'
complete -c berth -n "__fish_berth_needs_command" -f -a "apply" -d 'Converge a partner\'s host to its manifests, inside its window and when idle'
complete -c berth -n "__fish_berth_needs_command" -f -a "diff" -d 'What each partner\'s host will change between two revisions of the manifest repo'
complete -c berth -n "__fish_berth_needs_command" -f -a "lock" -d 'Pin every partner\'s scripts to a version and digest in berth.lock'
complete -c berth -n "__fish_berth_needs_command" -f -a "windows" -d 'Upcoming update windows per partner (local time and UTC), with the changes pending on this host for `--partner`; `--ics` prints an iCalendar to publish'
complete -c berth -n "__fish_berth_needs_command" -f -a "agent" -d 'The partner agent: fetch the manifest repo and converge this host, once (for cron) or on an interval (as a daemon)'
complete -c berth -n "__fish_berth_needs_command" -f -a "status" -d 'What the agent last did on this host, from its state dir'
complete -c berth -n "__fish_berth_needs_command" -f -a "volumes" -d 'The named volumes berth created on this host, each with the script that declares it or `orphaned`; berth never deletes them'
complete -c berth -n "__fish_berth_needs_command" -f -a "fleet" -d 'Every partner: what it should run and what its host last reported to the status repo, with stale records and bad signatures marked'
complete -c berth -n "__fish_berth_needs_command" -f -a "schema" -d 'Print the JSON Schema of a manifest kind, for editors'
complete -c berth -n "__fish_berth_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c berth -n "__fish_berth_using_subcommand validate" -l format -r -f -a "text\t''
json\t''
github\t''"
complete -c berth -n "__fish_berth_using_subcommand validate" -l partner -d 'Also check this partner\'s scripts against berth\'s floor (and `--policy`)' -r
complete -c berth -n "__fish_berth_using_subcommand validate" -l policy -d 'The partner\'s host policy to check its scripts against' -r -F
complete -c berth -n "__fish_berth_using_subcommand validate" -l engine -d 'The engine the partner\'s host runs (`docker` or `swarm`): what it cannot run is refused here too' -r
complete -c berth -n "__fish_berth_using_subcommand validate" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand plan" -l partner -r
complete -c berth -n "__fish_berth_using_subcommand plan" -l now -d 'Act as if it were this instant (RFC 3339): windows are read at it' -r
complete -c berth -n "__fish_berth_using_subcommand plan" -l state-dir -d 'Where the journal and failed digests are kept' -r -F
complete -c berth -n "__fish_berth_using_subcommand plan" -l policy -d 'The partner\'s host policy (`kind: HostPolicy`): what any script may do on this host' -r -F
complete -c berth -n "__fish_berth_using_subcommand plan" -l age-identity -d 'The age identity file (`age-keygen` format) the partner\'s secrets are opened with' -r -F
complete -c berth -n "__fish_berth_using_subcommand plan" -l secrets-dir -d 'Where secret files are written for the containers to mount: a directory on tmpfs' -r -F
complete -c berth -n "__fish_berth_using_subcommand plan" -l namespace -d 'Act in this namespace only (as an agent.yaml `namespace:` does)' -r
complete -c berth -n "__fish_berth_using_subcommand plan" -l engine -d '`docker` (one engine) or `swarm` (a Swarm manager; docs/swarm.md), as agent.yaml\'s `engine:`' -r
complete -c berth -n "__fish_berth_using_subcommand plan" -l format -r -f -a "text\t''
json\t''
markdown\t''"
complete -c berth -n "__fish_berth_using_subcommand plan" -l ignore-window -d 'Run steps even outside the update window or in a blackout'
complete -c berth -n "__fish_berth_using_subcommand plan" -l ignore-idle -d 'Run steps even when the partner\'s service is not idle'
complete -c berth -n "__fish_berth_using_subcommand plan" -l exit-code -d 'Exit 2 when changes are pending'
complete -c berth -n "__fish_berth_using_subcommand plan" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand apply" -l partner -r
complete -c berth -n "__fish_berth_using_subcommand apply" -l now -d 'Act as if it were this instant (RFC 3339): windows are read at it' -r
complete -c berth -n "__fish_berth_using_subcommand apply" -l state-dir -d 'Where the journal and failed digests are kept' -r -F
complete -c berth -n "__fish_berth_using_subcommand apply" -l policy -d 'The partner\'s host policy (`kind: HostPolicy`): what any script may do on this host' -r -F
complete -c berth -n "__fish_berth_using_subcommand apply" -l age-identity -d 'The age identity file (`age-keygen` format) the partner\'s secrets are opened with' -r -F
complete -c berth -n "__fish_berth_using_subcommand apply" -l secrets-dir -d 'Where secret files are written for the containers to mount: a directory on tmpfs' -r -F
complete -c berth -n "__fish_berth_using_subcommand apply" -l namespace -d 'Act in this namespace only (as an agent.yaml `namespace:` does)' -r
complete -c berth -n "__fish_berth_using_subcommand apply" -l engine -d '`docker` (one engine) or `swarm` (a Swarm manager; docs/swarm.md), as agent.yaml\'s `engine:`' -r
complete -c berth -n "__fish_berth_using_subcommand apply" -l min-free -d 'Defer a pull that would leave less than this free on the engine\'s data root (`512m`, `2g`; 0 turns the guard off)' -r
complete -c berth -n "__fish_berth_using_subcommand apply" -l ignore-window -d 'Run steps even outside the update window or in a blackout'
complete -c berth -n "__fish_berth_using_subcommand apply" -l ignore-idle -d 'Run steps even when the partner\'s service is not idle'
complete -c berth -n "__fish_berth_using_subcommand apply" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand diff" -l base -d 'The revision changes are measured from (e.g. `origin/main`)' -r
complete -c berth -n "__fish_berth_using_subcommand diff" -l head -d 'The revision to compare; the working tree when omitted' -r
complete -c berth -n "__fish_berth_using_subcommand diff" -l format -r -f -a "text\t''
json\t''
markdown\t''"
complete -c berth -n "__fish_berth_using_subcommand diff" -l exit-code -d 'Exit 2 when some partner\'s host would change'
complete -c berth -n "__fish_berth_using_subcommand diff" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand lock" -l check -d 'Change nothing; exit 1 when berth.lock is missing or stale, saying what changed'
complete -c berth -n "__fish_berth_using_subcommand lock" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand windows" -l partner -d 'Only this partner, with the changes pending for it on this host\'s engine' -r
complete -c berth -n "__fish_berth_using_subcommand windows" -l days -d 'How many days ahead to list' -r
complete -c berth -n "__fish_berth_using_subcommand windows" -l now -d 'List from this instant (RFC 3339) instead of now' -r
complete -c berth -n "__fish_berth_using_subcommand windows" -l state-dir -d 'Where failed digests are remembered (for the pending changes)' -r -F
complete -c berth -n "__fish_berth_using_subcommand windows" -l policy -d 'The partner\'s host policy, so changes it refuses are not listed as pending' -r -F
complete -c berth -n "__fish_berth_using_subcommand windows" -l age-identity -d 'The age identity, so scripts that use secrets are planned (see `plan`)' -r -F
complete -c berth -n "__fish_berth_using_subcommand windows" -l ics -d 'Print an RFC 5545 iCalendar instead of text'
complete -c berth -n "__fish_berth_using_subcommand windows" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand agent" -l config -r -F
complete -c berth -n "__fish_berth_using_subcommand agent" -l engine -d '`docker` or `swarm`, over agent.yaml\'s `engine:`' -r
complete -c berth -n "__fish_berth_using_subcommand agent" -l once -d 'One pass, then exit with its code'
complete -c berth -n "__fish_berth_using_subcommand agent" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand status" -l state-dir -r -F
complete -c berth -n "__fish_berth_using_subcommand status" -l namespace -d 'The agent of this namespace' -r
complete -c berth -n "__fish_berth_using_subcommand status" -l format -r -f -a "text\t''
json\t''"
complete -c berth -n "__fish_berth_using_subcommand status" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand volumes" -l partner -d 'Only this partner\'s volumes' -r
complete -c berth -n "__fish_berth_using_subcommand volumes" -l state-dir -d 'Where each partner\'s last pass recorded the volumes its scripts declare' -r -F
complete -c berth -n "__fish_berth_using_subcommand volumes" -l namespace -d 'Only this namespace\'s volumes' -r
complete -c berth -n "__fish_berth_using_subcommand volumes" -l format -r -f -a "text\t''
json\t''"
complete -c berth -n "__fish_berth_using_subcommand volumes" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand fleet" -l status -d 'The status repo: a git URL or a path (bare or checked out), `#branch` appended for another branch than `main`' -r
complete -c berth -n "__fish_berth_using_subcommand fleet" -l manifests -d 'The manifest repo: a directory, or a git repo or URL (`#branch` to pick one)' -r
complete -c berth -n "__fish_berth_using_subcommand fleet" -l format -r -f -a "text\t''
json\t''
markdown\t''
html\t''"
complete -c berth -n "__fish_berth_using_subcommand fleet" -l now -d 'Judge as if it were this instant (RFC 3339)' -r
complete -c berth -n "__fish_berth_using_subcommand fleet" -l exit-code -d 'Exit 2 when a partner is behind, stale or missing, 1 when one failed, rolled back, is held, or its record is unreadable or not signed by its key'
complete -c berth -n "__fish_berth_using_subcommand fleet" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand schema" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from validate plan apply diff lock windows agent status volumes fleet schema help" -f -a "validate" -d 'Check a manifest repo; every finding names path:line:col'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from validate plan apply diff lock windows agent status volumes fleet schema help" -f -a "plan" -d 'Show what `apply` would change on a partner\'s host, and why'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from validate plan apply diff lock windows agent status volumes fleet schema help" -f -a "apply" -d 'Converge a partner\'s host to its manifests, inside its window and when idle'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from validate plan apply diff lock windows agent status volumes fleet schema help" -f -a "diff" -d 'What each partner\'s host will change between two revisions of the manifest repo'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from validate plan apply diff lock windows agent status volumes fleet schema help" -f -a "lock" -d 'Pin every partner\'s scripts to a version and digest in berth.lock'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from validate plan apply diff lock windows agent status volumes fleet schema help" -f -a "windows" -d 'Upcoming update windows per partner (local time and UTC), with the changes pending on this host for `--partner`; `--ics` prints an iCalendar to publish'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from validate plan apply diff lock windows agent status volumes fleet schema help" -f -a "agent" -d 'The partner agent: fetch the manifest repo and converge this host, once (for cron) or on an interval (as a daemon)'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from validate plan apply diff lock windows agent status volumes fleet schema help" -f -a "status" -d 'What the agent last did on this host, from its state dir'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from validate plan apply diff lock windows agent status volumes fleet schema help" -f -a "volumes" -d 'The named volumes berth created on this host, each with the script that declares it or `orphaned`; berth never deletes them'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from validate plan apply diff lock windows agent status volumes fleet schema help" -f -a "fleet" -d 'Every partner: what it should run and what its host last reported to the status repo, with stale records and bad signatures marked'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from validate plan apply diff lock windows agent status volumes fleet schema help" -f -a "schema" -d 'Print the JSON Schema of a manifest kind, for editors'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from validate plan apply diff lock windows agent status volumes fleet schema help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
