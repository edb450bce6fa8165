package bootstrap

import (
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/manifests"
)

// checkPair refuses a manifest and lock that disagree (a requirement the
// lock lacks, or pins at a version the requirement excludes), judged for
// the probed interpreter, before anything is downloaded or reported: a
// sync would otherwise install the lock without the missing package and
// call the group installed. It runs past the in-sync boot only: a boot
// record exists only for a pair that a sync has checked.
func (c *Config) checkPair(info *interp.Info) error {
	lock, err := c.Lock.Parse()
	if err != nil {
		return err
	}
	problems := c.Manifest.CheckRequirements(lock, func(group string) (pep508.Environment, bool) {
		return markerEnv(info, []string{group}), true
	})
	if len(problems) == 0 {
		return nil
	}
	return &InputError{Err: &manifests.PairError{File: c.Manifest.File, Problems: problems}}
}
