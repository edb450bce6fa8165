package mfsrig
import ("testing";"context";"os";"os/signal";"fmt")
func TestRigUp(t *testing.T){
 if os.Getenv("RIGUP")=="" {t.Skip()}
 r,err:=Start(context.Background(),Options{})
 if err!=nil{t.Fatal(err)}
 defer r.Close()
 for _,c:=range r.Clients(){fmt.Println("MOUNT",c.Mount)}
 os.WriteFile("/tmp/rigup/mounts", []byte(r.Clients()[0].Mount+"\n"+r.Clients()[1].Mount+"\n"), 0o644)
 ch:=make(chan os.Signal,1); signal.Notify(ch, os.Interrupt); <-ch
}
