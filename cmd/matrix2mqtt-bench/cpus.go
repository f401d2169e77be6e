package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
)

// childCmd is the command of the bridge subprocess: this binary in bridge mode with the
// bridge's environment. With -cpus it runs with GOMAXPROCS set to that many, and under
// taskset, where it is installed, on the first that many CPUs; the benchmark and the servers
// keep every CPU.
func (b *bridgeProc) childCmd(self string) *exec.Cmd {
	cmd := exec.Command(self, childArg)
	if taskset, err := exec.LookPath("taskset"); err == nil && b.cpus > 0 {
		cmd = exec.Command(taskset, "-c", cpuList(b.cpus), self, childArg)
	}
	cmd.Env = append(os.Environ(), b.environ()...)
	if b.cpus > 0 {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(b.cpus))
	}
	return cmd
}

// cpuList is taskset's list of the first n CPUs: "0", "0-1", …
func cpuList(n int) string {
	if n == 1 {
		return "0"
	}
	return fmt.Sprintf("0-%d", n-1)
}

// bridgeMode describes how the bridges run, for the report's settings and its title.
func bridgeMode(o *options) string {
	switch {
	case o.inproc:
		return "in-process"
	case o.cpus == 0:
		return "subprocess"
	}
	how := fmt.Sprintf("GOMAXPROCS=%d, not pinned: no taskset", o.cpus)
	if _, err := exec.LookPath("taskset"); err == nil {
		how = fmt.Sprintf("taskset -c %s, GOMAXPROCS=%d", cpuList(o.cpus), o.cpus)
	}
	return fmt.Sprintf("subprocess on %d CPU(s) (%s)", o.cpus, how)
}
