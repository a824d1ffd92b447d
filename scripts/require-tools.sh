# Sourced by the scripts that need tools from Debian packages:
#
#   require_tools CALLER TOOL[=PACKAGE]...
#
# returns when every TOOL is on PATH (PACKAGE defaults to the tool's own name). Otherwise, run as root where
# apt-get exists, it installs the missing tools' packages in one go (apt-get's output to stderr); elsewhere
# it stops the caller with an error that names the packages. One home for this, so every script installs
# the same way and says the same thing when it cannot.

require_tools() {
    local caller="$1" spec tool missing=() packages=()
    shift
    for spec in "$@"; do
        tool="${spec%%=*}"
        command -v "$tool" >/dev/null 2>&1 && continue
        missing+=("$tool")
        [[ " ${packages[*]} " == *" ${spec#*=} "* ]] || packages+=("${spec#*=}")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "$caller: ${missing[*]} missing: install ${packages[*]} (Debian/Ubuntu: apt-get install ${packages[*]})" >&2
        exit 1
    fi
    echo "$caller: installing ${packages[*]} (for ${missing[*]})" >&2
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"; } >&2; then
        echo "$caller: apt-get install ${packages[*]} failed" >&2
        exit 1
    fi
    for tool in "${missing[@]}"; do
        command -v "$tool" >/dev/null 2>&1 \
            || { echo "$caller: ${packages[*]} installed, but $tool is still not on PATH" >&2; exit 1; }
    done
}
