package main

import (
	"errors"

	"io/fs"
	"os"
	"syscall"

	"go.uber.org/zap"
)

// checkVolume stands between a volume that failed to attach and a silent
// install onto the container's own small disk. On RunPod a volume that did
// not attach leaves /runpod-volume a plain directory of the container (or
// absent), and a sync there would succeed, fill the container disk, and be
// redone by every worker. So a volume that does not exist is an error
// unless --create-volume asks for it (then commands that write make it),
// and a volume on the same filesystem as / inside a container gets a
// warning, which --create-volume also silences (it says the volume is
// meant to be local, as in tests and demos).
func (a *app) checkVolume(volume string, mayCreate bool) error {
	fi, err := os.Stat(volume)
	switch {
	case err == nil && !fi.IsDir():
		return usageError("--volume %s is not a directory", volume)
	case errors.Is(err, fs.ErrNotExist):
		if !a.opts.createVolume {
			return usageError("--volume %s does not exist: did the network volume attach? Attach it, or pass --create-volume (VOLBOOT_CREATE_VOLUME=1) to make the directory and install there", volume)
		}
		if !mayCreate {
			return usageError("--volume %s does not exist: nothing is installed there yet (volboot sync makes it with --create-volume)", volume)
		}
		if err := os.MkdirAll(volume, 0o755); err != nil {
			return usageError("--volume %s: make it: %v", volume, err)
		}
		a.log.Info("made the volume directory (--create-volume)", zap.String("volume", volume))
		return nil
	case err != nil:
		return usageError("--volume %s: %v", volume, err)
	}
	if !a.opts.createVolume && onRootFilesystem(fi) && inContainer(a.env) {
		a.log.Warn("the volume is on the container's own disk, not a network volume: did it attach? "+
			"Everything installed here is lost with the container and redone by every worker. "+
			"Pass --create-volume (VOLBOOT_CREATE_VOLUME=1) if this is meant", zap.String("volume", volume))
	}
	return nil
}

// inContainer reports whether this process runs in a container: the files
// Docker and Podman leave at the root, or RunPod's pod variable.
func inContainer(getenv func(string) string) bool {
	if getenv("RUNPOD_POD_ID") != "" {
		return true
	}
	for _, f := range []string{"/.dockerenv", "/run/.containerenv"} {
		if _, err := os.Stat(f); err == nil {
			return true
		}
	}
	return false
}

// onRootFilesystem reports whether fi (the volume's, already stat'ed: on a
// network volume every stat is a round trip, on every boot) is on the
// filesystem of /; false when that cannot be told.
func onRootFilesystem(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	var root syscall.Stat_t
	return ok && syscall.Stat("/", &root) == nil && st.Dev == root.Dev
}

// errVolumeReadOnly reports whether err means the volume refuses writes to
// this process: mounted read-only, or owned by another user.
func errVolumeReadOnly(err error) bool {
	return errors.Is(err, syscall.EROFS) || errors.Is(err, fs.ErrPermission)
}
