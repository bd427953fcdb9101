import torch, time, torch.nn.functional as F
torch.manual_seed(0)
B,T,H,Hk,D=4,256,4,2,64
def bench(fn, n=30):
    for _ in range(3): fn()
    t=time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter()-t)/n*1e3
for dt in (torch.bfloat16, torch.float32):
    q=torch.randn(B,T,H,D,dtype=dt,requires_grad=True); k=torch.randn(B,T,Hk,D,dtype=dt,requires_grad=True); v=torch.randn(B,T,Hk,D,dtype=dt,requires_grad=True)
    g=torch.randn(B,H,T,D,dtype=dt)
    def f_t(bw=False):
        y=F.scaled_dot_product_attention(q.transpose(1,2),k.transpose(1,2),v.transpose(1,2),is_causal=True,enable_gqa=True)
        if bw: y.backward(g)
    def f_c(bw=False):
        y=F.scaled_dot_product_attention(q.transpose(1,2).contiguous(),k.transpose(1,2).contiguous(),v.transpose(1,2).contiguous(),is_causal=True,enable_gqa=True)
        if bw: y.backward(g)
    def f_rep(bw=False):
        kk=k.transpose(1,2).repeat_interleave(2,1); vv=v.transpose(1,2).repeat_interleave(2,1)
        y=F.scaled_dot_product_attention(q.transpose(1,2),kk,vv,is_causal=True)
        if bw: y.backward(g)
    mask=torch.ones(T,T,dtype=torch.bool).tril()
    def f_math(bw=False):
        qq=q.transpose(1,2); kk=k.transpose(1,2).repeat_interleave(2,1); vv=v.transpose(1,2).repeat_interleave(2,1)
        s=(qq@kk.transpose(-1,-2))*(D**-0.5)
        s=s.masked_fill(~mask,float('-inf'))
        y=torch.softmax(s.float(),-1).to(dt)@vv
        if bw: y.backward(g)
    for name,f in [("transposed",f_t),("contig",f_c),("repeat",f_rep),("math",f_math)]:
        print(dt, name, "fwd %.2f ms"%bench(lambda: f(False)), "fwd+bwd %.2f ms"%bench(lambda: f(True)))
