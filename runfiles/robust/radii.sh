# PGD radii of Figures 5-6 per dataset and norm, sourced by attack_all.sh and advmaml.sh.
# miniImageNet: the x-axes of Figure 6 (Appendix D): L1 0-50, L2 0-0.5, Linf 0-0.005, five steps each.
# Omniglot: the x-axes of Figure 5 as the original repository's images/adversarial_robustness.png
# shows them: L1 0-100, L2 0-5, Linf 0-0.1, five steps each; its legends' adversarial MAML radii
# (L1 20 and 100, L2 1 and 5, Linf 0.02 and 0.1) are each range's smallest and largest nonzero radius.
# digits (the CPU-scale demo, runfiles/robust/quickstart.sh): our choice for its 16x16 images.
# Adversarial MAML trains with the smallest and largest nonzero radius of each range (footnote 2).
declare -A RADII=(
  [mimgnet/l1]=0,10,20,30,40,50 [mimgnet/l2]=0,0.1,0.2,0.3,0.4,0.5
  [mimgnet/linf]=0,0.001,0.002,0.003,0.004,0.005
  [omniglot/l1]=0,20,40,60,80,100 [omniglot/l2]=0,1,2,3,4,5
  [omniglot/linf]=0,0.02,0.04,0.06,0.08,0.1
  [digits/l1]=0,2.5,5,7.5,10 [digits/l2]=0,0.25,0.5,0.75,1 [digits/linf]=0,0.025,0.05,0.075,0.1
)
NORMS=(l1 l2 linf)

# radii DATASET NORM: the comma-separated radii (EPS_<NORM> wins when set).
radii() {
  local over="EPS_${2^^}"
  echo "${!over:-${RADII[$1/$2]:?no radii for dataset $1, norm $2: set $over}}"
}
