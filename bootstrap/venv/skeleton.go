// Package venv makes virtual environments natively, without running
// `python -m venv` or pip: the skeleton (pyvenv.cfg, bin/python links,
// activate scripts) and generations (DESIGN.md §5) assembled from store
// entries by hard links.
//
// Every generation is relocatable (rule 4): links inside it are relative
// (bin/python points at the base interpreter, which lives in the image, not
// on the volume), scripts find their interpreter beside themselves, and
// activate scripts compute VIRTUAL_ENV from their own location. Nothing in
// it names the directory it was built in.
package venv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/volboot/volboot/bootstrap/interp"
)

// Layout is where things go in an environment, relative to its root.
type Layout struct {
	SitePackages string // lib/python3.11/site-packages
	Scripts      string // bin
	Headers      string // include/site/python3.11 (a distribution's headers go in <Headers>/<name>)
	Data         string // "" (the root)
	Lib64        bool   // lib64 -> lib
}

// LayoutFor derives the venv layout from a probe. platlib and purelib are
// the same directory in every venv volboot makes: where the scheme puts
// platlib under lib64 that is the lib64 -> lib link, so files go through lib.
func LayoutFor(info *interp.Info) (Layout, error) {
	l := Layout{
		SitePackages: info.VenvPaths["purelib"],
		Scripts:      info.VenvPaths["scripts"],
		Data:         info.VenvPaths["data"],
		Headers:      filepath.Join("include", "site", "python"+info.PyVersion()),
		Lib64:        info.Lib64,
	}
	for _, p := range []string{l.SitePackages, l.Scripts} {
		if p == "" || filepath.IsAbs(p) || strings.HasPrefix(filepath.Clean(p), "..") {
			return l, fmt.Errorf("interpreter %s: venv scheme path %q is not inside the environment", info.Path, p)
		}
	}
	if pl := info.VenvPaths["platlib"]; pl != "" && pl != l.SitePackages {
		if !(l.Lib64 && strings.TrimPrefix(pl, "lib64/") == strings.TrimPrefix(l.SitePackages, "lib/")) {
			return l, fmt.Errorf("interpreter %s: platlib %q and purelib %q differ; volboot needs them to be one directory", info.Path, pl, l.SitePackages)
		}
	}
	return l, nil
}

// WriteSkeleton fills root (an existing, empty directory) with a bare
// virtual environment for info, like `python -m venv --without-pip`:
// pyvenv.cfg, bin/python, python3 and python3.X, lib64 -> lib where the
// platform has it, the site-packages directory, and activate scripts for
// sh/bash/zsh, fish and csh. prompt may be empty (no prompt change).
func WriteSkeleton(root string, info *interp.Info, prompt, creator string) (Layout, error) {
	l, err := LayoutFor(info)
	if err != nil {
		return l, err
	}
	if info.BaseExecutable == "" || !filepath.IsAbs(info.BaseExecutable) {
		return l, fmt.Errorf("interpreter %s: base executable %q is not an absolute path", info.Path, info.BaseExecutable)
	}
	bin := filepath.Join(root, l.Scripts)
	for _, d := range []string{bin, filepath.Join(root, l.SitePackages), filepath.Join(root, "include")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return l, fmt.Errorf("create %s: %w", d, err)
		}
	}
	if l.Lib64 {
		if err := symlink("lib", filepath.Join(root, "lib64")); err != nil {
			return l, fmt.Errorf("create lib64 link: %w", err)
		}
	}
	cfg := fmt.Sprintf("home = %s\nimplementation = %s\nversion_info = %d.%d.%d.%s.%d\n"+
		"include-system-site-packages = false\nversion = %s\nexecutable = %s\n",
		filepath.Dir(info.BaseExecutable), implName(info.Implementation), info.Major, info.Minor, info.Micro,
		info.ReleaseLevel, info.Serial, info.Version, info.BaseExecutable)
	if prompt != "" {
		cfg += fmt.Sprintf("prompt = %s\n", prompt)
	}
	if creator != "" {
		cfg += fmt.Sprintf("volboot = %s\n", creator)
	}
	if err := os.WriteFile(filepath.Join(root, "pyvenv.cfg"), []byte(cfg), 0o644); err != nil {
		return l, err
	}
	// As python -m venv does: python points at the base interpreter, the
	// versioned names at python.
	links := [][2]string{
		{info.BaseExecutable, "python"},
		{"python", "python3"},
		{"python", "python" + info.PyVersion()},
	}
	for _, ln := range links {
		if err := symlink(ln[0], filepath.Join(bin, ln[1])); err != nil {
			return l, fmt.Errorf("create %s link: %w", ln[1], err)
		}
	}
	scripts := map[string]string{
		"activate":      activateSh(l, prompt),
		"activate.fish": activateFish(l, prompt),
		"activate.csh":  activateCsh(l, prompt),
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o644); err != nil {
			return l, err
		}
	}
	return l, nil
}

// symlink makes the link at path to target; a link already there to the
// same target is kept (a resumed build, see resume.go), anything else
// there replaced.
func symlink(target, path string) error {
	err := os.Symlink(target, path)
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	if t, rerr := os.Readlink(path); rerr == nil && t == target {
		return nil
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	return os.Symlink(target, path)
}

// SkeletonFiles are the paths WriteSkeleton creates, relative to the root,
// that no wheel may overwrite.
func SkeletonFiles(l Layout, info *interp.Info) []string {
	out := []string{"pyvenv.cfg"}
	for _, n := range []string{"python", "python3", "python" + info.PyVersion(), "activate", "activate.fish", "activate.csh"} {
		out = append(out, filepath.ToSlash(filepath.Join(l.Scripts, n)))
	}
	if l.Lib64 {
		out = append(out, "lib64")
	}
	return out
}

func implName(s string) string {
	switch s {
	case "cpython":
		return "CPython"
	case "pypy":
		return "PyPy"
	}
	return s
}

// shQuote quotes s for POSIX shells.
func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// upFromScripts is the relative path from the scripts directory to the root.
func upFromScripts(l Layout) string {
	n := strings.Count(filepath.ToSlash(filepath.Clean(l.Scripts)), "/") + 1
	return strings.TrimSuffix(strings.Repeat("../", n), "/")
}

func activateSh(l Layout, prompt string) string {
	up := upFromScripts(l)
	ps := ""
	if prompt != "" {
		ps = prompt
	}
	return `# Source this file from bash, zsh or ksh: ". <env>/` + filepath.ToSlash(l.Scripts) + `/activate".
# It finds the environment from its own location, so it keeps working when
# the volume is mounted somewhere else.

deactivate () {
    if [ -n "${_OLD_VIRTUAL_PATH:-}" ] ; then
        PATH="${_OLD_VIRTUAL_PATH:-}"
        export PATH
        unset _OLD_VIRTUAL_PATH
    fi
    if [ -n "${_OLD_VIRTUAL_PYTHONHOME:-}" ] ; then
        PYTHONHOME="${_OLD_VIRTUAL_PYTHONHOME:-}"
        export PYTHONHOME
        unset _OLD_VIRTUAL_PYTHONHOME
    fi
    hash -r 2> /dev/null
    if [ -n "${_OLD_VIRTUAL_PS1:-}" ] ; then
        PS1="${_OLD_VIRTUAL_PS1:-}"
        export PS1
        unset _OLD_VIRTUAL_PS1
    fi
    unset VIRTUAL_ENV
    unset VIRTUAL_ENV_PROMPT
    if [ ! "${1:-}" = "nondestructive" ] ; then
        unset -f deactivate
    fi
}

deactivate nondestructive

if [ -n "${BASH_VERSION:-}" ] ; then
    eval '_volboot_src="${BASH_SOURCE[0]}"'
elif [ -n "${ZSH_VERSION:-}" ] ; then
    eval '_volboot_src="${(%):-%x}"'
elif [ -n "${KSH_VERSION:-}" ] ; then
    eval '_volboot_src="${.sh.file}"'
else
    _volboot_src=""
fi
if [ -z "$_volboot_src" ] ; then
    echo "activate: this shell cannot tell where the script lives; source it from bash, zsh or ksh" >&2
    unset _volboot_src
    return 1 2> /dev/null || exit 1
fi
VIRTUAL_ENV=$(cd "$(dirname -- "$_volboot_src")/` + up + `" && pwd)
unset _volboot_src
export VIRTUAL_ENV

_OLD_VIRTUAL_PATH="$PATH"
PATH="$VIRTUAL_ENV/` + filepath.ToSlash(l.Scripts) + `:$PATH"
export PATH

if [ -n "${PYTHONHOME:-}" ] ; then
    _OLD_VIRTUAL_PYTHONHOME="${PYTHONHOME:-}"
    unset PYTHONHOME
fi

VIRTUAL_ENV_PROMPT=` + shQuote(ps) + `
if [ -z "$VIRTUAL_ENV_PROMPT" ] ; then
    VIRTUAL_ENV_PROMPT=$(basename -- "$VIRTUAL_ENV")
fi
export VIRTUAL_ENV_PROMPT
if [ -z "${VIRTUAL_ENV_DISABLE_PROMPT:-}" ] ; then
    _OLD_VIRTUAL_PS1="${PS1:-}"
    PS1="(${VIRTUAL_ENV_PROMPT}) ${PS1:-}"
    export PS1
fi

hash -r 2> /dev/null
`
}

func activateFish(l Layout, prompt string) string {
	up := upFromScripts(l)
	return `# Source this file from fish: "source <env>/` + filepath.ToSlash(l.Scripts) + `/activate.fish".
# It finds the environment from its own location.

function deactivate -d "Exit the virtual environment and return to the normal environment."
    if test -n "$_OLD_VIRTUAL_PATH"
        set -gx PATH $_OLD_VIRTUAL_PATH
        set -e _OLD_VIRTUAL_PATH
    end
    if test -n "$_OLD_VIRTUAL_PYTHONHOME"
        set -gx PYTHONHOME $_OLD_VIRTUAL_PYTHONHOME
        set -e _OLD_VIRTUAL_PYTHONHOME
    end
    if test -n "$_OLD_FISH_PROMPT_OVERRIDE"
        set -e _OLD_FISH_PROMPT_OVERRIDE
        if functions -q _old_fish_prompt
            functions -e fish_prompt
            functions -c _old_fish_prompt fish_prompt
            functions -e _old_fish_prompt
        end
    end
    set -e VIRTUAL_ENV
    set -e VIRTUAL_ENV_PROMPT
    if test "$argv[1]" != "nondestructive"
        functions -e deactivate
    end
end

deactivate nondestructive

set -gx VIRTUAL_ENV (builtin realpath (dirname (status --current-filename))/` + up + `)
set -gx _OLD_VIRTUAL_PATH $PATH
set -gx PATH "$VIRTUAL_ENV/` + filepath.ToSlash(l.Scripts) + `" $PATH

if set -q PYTHONHOME
    set -gx _OLD_VIRTUAL_PYTHONHOME $PYTHONHOME
    set -e PYTHONHOME
end

set -gx VIRTUAL_ENV_PROMPT ` + fishQuote(prompt) + `
if test -z "$VIRTUAL_ENV_PROMPT"
    set -gx VIRTUAL_ENV_PROMPT (basename "$VIRTUAL_ENV")
end

if test -z "$VIRTUAL_ENV_DISABLE_PROMPT"
    functions -c fish_prompt _old_fish_prompt
    function fish_prompt
        set -l old_status $status
        printf "%s%s%s" (set_color 4B8BBE) "($VIRTUAL_ENV_PROMPT) " (set_color normal)
        echo "exit $old_status" | .
        _old_fish_prompt
    end
    set -gx _OLD_FISH_PROMPT_OVERRIDE "$VIRTUAL_ENV"
end
`
}

func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func activateCsh(l Layout, prompt string) string {
	up := upFromScripts(l)
	p := strings.NewReplacer(`"`, ``, "`", ``, "!", ``, "$", ``).Replace(prompt)
	return `# Source this file from csh or tcsh: "source <env>/` + filepath.ToSlash(l.Scripts) + `/activate.csh".
# It finds the environment from the command line that sourced it.

alias deactivate 'test $?_OLD_VIRTUAL_PATH != 0 && setenv PATH "$_OLD_VIRTUAL_PATH" && unset _OLD_VIRTUAL_PATH; rehash; test $?_OLD_VIRTUAL_PROMPT != 0 && set prompt="$_OLD_VIRTUAL_PROMPT" && unset _OLD_VIRTUAL_PROMPT; unsetenv VIRTUAL_ENV; unsetenv VIRTUAL_ENV_PROMPT; test "\!:*" != "nondestructive" && unalias deactivate'

deactivate nondestructive

# csh cannot tell a sourced script where it is. An interactive tcsh knows
# the command line that sourced this file ($_); elsewhere pass the
# environment: "source <env>/bin/activate.csh <env>".
set _volboot_env = ""
if ( $#argv >= 1 ) then
    set _volboot_env = "$argv[1]"
else
    set _volboot_cmd = ($_)
    if ( $#_volboot_cmd >= 2 ) then
        set _volboot_src = "$_volboot_cmd[2]"
        set _volboot_env = "$_volboot_src:h/` + up + `"
        unset _volboot_src
    endif
    unset _volboot_cmd
endif
if ( "$_volboot_env" == "" ) then
    echo "activate.csh: cannot tell where this script lives; run: source <env>/` + filepath.ToSlash(l.Scripts) + `/activate.csh <env>"
    unset _volboot_env
    exit 1
endif
setenv VIRTUAL_ENV ` + "`" + `cd "$_volboot_env" && pwd` + "`" + `
unset _volboot_env

set _OLD_VIRTUAL_PATH="$PATH"
setenv PATH "$VIRTUAL_ENV/` + filepath.ToSlash(l.Scripts) + `:$PATH"

if ("` + p + `" != "") then
    setenv VIRTUAL_ENV_PROMPT "` + p + `"
else
    setenv VIRTUAL_ENV_PROMPT ` + "`" + `basename "$VIRTUAL_ENV"` + "`" + `
endif

if ( $?prompt ) then
    set _OLD_VIRTUAL_PROMPT="$prompt"
    if (! "$?VIRTUAL_ENV_DISABLE_PROMPT") then
        set prompt = "($VIRTUAL_ENV_PROMPT) $prompt"
    endif
endif

rehash
`
}
