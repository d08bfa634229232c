# PGD radii of Figures 5-6 per dataset and norm, sourced by attack_all.sh and advmaml.sh.
# miniImageNet: the x-axes of Figure 6 (Appendix D): L1 0-50, L2 0-0.5, Linf 0-0.005, five steps each.
# Omniglot: the axes of Figure 5 are not legible in our copy of the paper; we assume Figure 6's ranges
# until checked against the published figure (override with EPS_L1, EPS_L2, EPS_LINF).
# digits (the CPU-scale demo, runfiles/robust/quickstart.sh): our choice for its 16x16 images.
# Adversarial MAML trains with the smallest and largest nonzero radius of each range (footnote 2).
declare -A RADII=(
  [mimgnet/l1]=0,10,20,30,40,50 [mimgnet/l2]=0,0.1,0.2,0.3,0.4,0.5
  [mimgnet/linf]=0,0.001,0.002,0.003,0.004,0.005
  [omniglot/l1]=0,10,20,30,40,50 [omniglot/l2]=0,0.1,0.2,0.3,0.4,0.5
  [omniglot/linf]=0,0.001,0.002,0.003,0.004,0.005
  [digits/l1]=0,2.5,5,7.5,10 [digits/l2]=0,0.25,0.5,0.75,1 [digits/linf]=0,0.025,0.05,0.075,0.1
)
NORMS=(l1 l2 linf)

# radii DATASET NORM: the comma-separated radii (EPS_<NORM> wins when set).
radii() {
  local over="EPS_${2^^}"
  echo "${!over:-${RADII[$1/$2]:?no radii for dataset $1, norm $2: set $over}}"
}
