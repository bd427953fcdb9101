import torch, time
torch.manual_seed(0)
QUINTIC=(3.4445, -4.7750, 2.0315)
def ns(G, dt, steps=5):
    X=G.to(dt); X=X/(X.norm()+1e-7); tr=X.size(0)>X.size(1)
    if tr: X=X.T
    for _ in range(steps):
        A=X@X.T; X=QUINTIC[0]*X+(QUINTIC[1]*A+QUINTIC[2]*A@A)@X
    return X.T if tr else X
shapes=[(256,256)]*2*4+[(128,256)]*2*4+[(512,256),(256,512)]*4  # q,proj; k,v; mlp fc/proj
Gs=[torch.randn(s) for s in shapes]
for dt in (torch.float32, torch.bfloat16):
    for _ in range(2): [ns(g,dt) for g in Gs]
    t=time.perf_counter()
    for _ in range(5): [ns(g,dt) for g in Gs]
    print(dt, "%.1f ms per Muon step"%((time.perf_counter()-t)/5*1e3))
